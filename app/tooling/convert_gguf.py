"""Turn a GGUF file into a Hugging Face folder that vLLM's CPU path can load.

Run with the vLLM virtual environment's interpreter (it needs ``transformers`` and ``gguf``,
which the service does not depend on)::

    python convert_gguf.py GGUF_FILE OUT_DIR

Prints one JSON line with the GGUF metadata it checked. The weights are data: nothing in the
file is executed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _gguf_metadata(path: Path) -> dict[str, str]:
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    out: dict[str, str] = {}
    for key in ("general.name", "general.architecture"):
        field = reader.fields.get(key)
        if field is not None:
            out[key] = bytes(field.parts[field.data[0]]).decode("utf-8", "replace")
    return out


def main(argv: list[str]) -> int:
    gguf_file, out_dir = Path(argv[1]), Path(argv[2])
    meta = _gguf_metadata(gguf_file)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model: Any = AutoModelForCausalLM.from_pretrained(
        str(gguf_file.parent), gguf_file=gguf_file.name
    )
    tokenizer: Any = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    # transformers 5.x refuses save_pretrained on a GGUF-loaded model unless the quantizer
    # bookkeeping is dropped; the weights are already dequantised in memory.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model = model.to(torch.bfloat16)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    print(json.dumps(meta))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
