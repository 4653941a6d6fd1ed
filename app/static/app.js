// Pursuit clinician page: plain JS over the REST API (no build step).
"use strict";

const $ = (id) => document.getElementById(id);
let session = null;

$("api-key").value = sessionStorage.getItem("pursuit-key") || "";
$("api-key").addEventListener("change", () => sessionStorage.setItem("pursuit-key", $("api-key").value.trim()));

function authorization() { return { Authorization: `Bearer ${$("api-key").value.trim()}` }; }

function problemError(status, problem) {
  return new Error(`${problem.title || status}: ${problem.detail || ""} (request ${problem.request_id || "?"})`);
}

async function call(method, path, body) {
  $("error").hidden = true;
  const headers = authorization();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = response.status === 204 ? null : await response.json();
  if (!response.ok) throw problemError(response.status, data || {});
  return data;
}

// A turn (open or answer) is sent with "Prefer: respond-async": the server answers 202 at
// once, the page follows the turn's progress events, then reads the reply from the poll URL.
async function turn(path, body, button) {
  $("error").hidden = true;
  const headers = { ...authorization(), "Content-Type": "application/json", Prefer: "respond-async" };
  const response = await fetch(path, { method: "POST", headers, body: JSON.stringify(body) });
  const data = await response.json();
  if (!response.ok) throw problemError(response.status, data || {});
  if (response.status !== 202) return data; // answered synchronously after all
  await followProgress(data.events, button);
  return poll(response.headers.get("Location"), button);
}

function showProgress(button, progress) {
  if (progress) button.textContent = `Working… ${progress.message}`;
}

// Server-sent events over fetch (EventSource cannot send the API key) until "done".
async function followProgress(url, button) {
  try {
    const response = await fetch(url, { headers: { ...authorization(), Accept: "text/event-stream" } });
    if (!response.ok || !response.body) return;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const lines = buffer.slice(0, end).split("\n");
        buffer = buffer.slice(end + 2);
        const field = (name) => (lines.find((l) => l.startsWith(`${name}: `)) || "").slice(name.length + 2);
        if (field("event") === "progress") showProgress(button, JSON.parse(field("data")));
        if (field("event") === "done") { reader.cancel(); return; }
      }
    }
  } catch (error) {
    // The stream broke: the poll below still finds the turn's end.
  }
}

async function poll(location, button) {
  for (;;) {
    const response = await fetch(location, { headers: authorization() });
    const data = await response.json();
    if (response.status !== 202) {
      if (!response.ok) throw problemError(response.status, data || {});
      return data;
    }
    showProgress(button, data.progress);
    await new Promise((resolve) => setTimeout(resolve, 1000 * Number(response.headers.get("Retry-After") || 1)));
  }
}

function showError(error) {
  $("error").textContent = error.message;
  $("error").hidden = false;
}

function busy(button, on) {
  document.body.dataset.busy = on ? "true" : "false";
  button.disabled = on;
  button.dataset.label = button.dataset.label || button.textContent;
  button.textContent = on ? "Working… (starting the turn)" : button.dataset.label;
}

function pct(x) { return `${(100 * x).toFixed(1)}%`; }

function renderDifferential(d) {
  $("diff-step").textContent = `after ${d.step} answer${d.step === 1 ? "" : "s"}`;
  const coverage = $("coverage");
  // A calibrated set that holds every candidate says nothing: never show it as authoritative.
  const full = d.calibrated && (d.trivial || d.set_size === d.all_labels.length);
  coverage.textContent = !d.calibrated ? d.guarantee
    : full ? `Calibrated on ${d.calibration_n} cases, but the set is the full list: it covers trivially and does not narrow anything yet. ${d.guarantee}`
    : `The highlighted set contains the right answer with probability ≥ ${pct(d.coverage_target)}, calibrated on ${d.calibration_n} cases. ${d.guarantee}`;
  coverage.classList.toggle("uncalibrated", !d.calibrated || full);
  const body = $("differential").querySelector("tbody");
  body.replaceChildren(...d.all_labels.map((x) => {
    const row = document.createElement("tr");
    row.className = x.in_set ? "in-set" : "";
    const cells = [x.label, null, x.p_value === null ? "—" : x.p_value.toFixed(3), x.in_set ? "✓" : ""];
    cells.forEach((text, i) => {
      const cell = document.createElement("td");
      if (i === 1) {
        const bar = document.createElement("span");
        bar.className = "bar";
        bar.style.width = `${Math.round(120 * x.probability)}px`;
        cell.append(bar, document.createTextNode(pct(x.probability)));
      } else {
        cell.textContent = text;
      }
      row.append(cell);
    });
    return row;
  }));
}

// The calibration plot needs the API key, so it is fetched, not linked.
let plotFor = null;
async function renderCalibration(d) {
  const figure = $("calibration");
  if (!d.calibrated || !d.calibration_id) { figure.hidden = true; return; }
  const url = `/v1/calibrations/${d.calibration_id}/plot.png?candidates=${d.all_labels.length}`;
  if (plotFor === url) { figure.hidden = false; return; }
  plotFor = url;
  try {
    const response = await fetch(url, { headers: authorization() });
    if (!response.ok) throw new Error(`plot: ${response.status}`);
    const image = $("calibration-plot");
    if (image.src) URL.revokeObjectURL(image.src);
    image.src = URL.createObjectURL(await response.blob());
    $("calibration-id").textContent = d.calibration_id;
    figure.hidden = false;
  } catch (error) {
    figure.hidden = true;
    plotFor = null;
  }
}

function renderWhy(q) {
  const box = $("why-body");
  box.replaceChildren();
  if (!q || q.expected_set_size === null) { box.textContent = `Chosen by the ${q ? q.policy : ""} policy.`; return; }
  const p = document.createElement("p");
  const rule = q.selection_rule === "calibrated"
    ? `counted with calibrated sets (selection calibration ${q.selection_calibration_id}, thresholds from random-question interviews)`
    : "counted with the model's own top labels holding 1 - alpha of its probability (uncalibrated: no selection calibration applies)";
  const goal = {
    set_size: "the smallest expected set",
    entropy_bound: "the lowest entropy bound built from its sets (the C-IP paper's objective)",
    expected_entropy: "the lowest expected entropy of the model's probabilities",
  }[q.objective] || "no objective (this policy does not optimise)";
  p.textContent = `Policy ${q.policy} chose ${goal}: after this question the set is expected to hold ${q.expected_set_size.toFixed(2)} candidates `
    + `(expected entropy ${q.expected_entropy.toFixed(3)} nats, bound ${q.entropy_bound.toFixed(3)}), sets ${rule}.`;
  if (q.tied > 0) {
    const all = q.candidates_scored !== null && q.tied === q.candidates_scored - 1;
    const broke = {
      expected_entropy: "expected entropy broke the tie",
      expected_set_size: "expected set size broke the tie",
      candidate_order: "they also tied on that, so the order the candidates came in chose: the choice among them is arbitrary",
    }[q.tie_break] || "the tie was broken by the policy's second score, then by candidate order";
    p.textContent += all
      ? ` Every candidate question scored the same (${q.candidates_scored} of them): none is expected to change the set more than another; ${broke}.`
      : ` ${q.tied} other candidate(s) scored the same (set sizes are whole numbers, so ties are common); ${broke}.`;
  }
  box.append(p);
  if (q.runner_ups.length) {
    const list = document.createElement("ul");
    q.runner_ups.forEach((r) => {
      const li = document.createElement("li");
      li.textContent = `${r.question} — expected set ${r.expected_set_size.toFixed(2)}, entropy ${r.expected_entropy.toFixed(3)}, bound ${r.entropy_bound.toFixed(3)}`;
      list.append(li);
    });
    box.append(document.createTextNode("Runner-ups:"), list);
  }
}

function render(s) {
  session = s;
  if (s.model_note) { $("model-banner").textContent = s.model_note; $("model-banner").hidden = false; }
  $("interview").hidden = false;
  $("start-form").hidden = true;
  $("session-meta").textContent = `${s.id.slice(0, 8)} · ${s.policy} · ${s.model}`;
  renderDifferential(s.differential);
  renderCalibration(s.differential);
  const q = s.next_question;
  $("question-box").hidden = !q;
  if (q) { $("question").textContent = q.text; renderWhy(q); }
  renderOptions(q);
  $("stopped").hidden = !s.should_stop;
  $("stopped").textContent = s.should_stop ? `The interview stopped. ${s.stop_note || s.stop_reason}` : "";
  $("finalize").hidden = s.status === "finalized";
  if (s.final_answer) {
    $("final").hidden = false;
    $("final").textContent = `Final: most probable "${s.final_answer}"; set {${s.final_set.join(", ")}}. Not a diagnosis.`;
  }
}

function addTranscript(question, answer) {
  const li = document.createElement("li");
  li.textContent = `${question} — ${answer}`;
  $("transcript").append(li);
}

$("start-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const [source, bank] = $("source").value.split(":");
  const body = {
    patient: { summary: $("summary").value, age: $("age").value ? Number($("age").value) : null, sex: $("sex").value || null },
    inquiry: $("inquiry").value,
    candidates: $("candidates").value.split("\n").map((x) => x.trim()).filter(Boolean),
    alpha: Number($("alpha").value),
    policy: $("policy").value,
    question_source: source,
    max_questions: Number($("max-questions").value),
    n_candidate_questions: Number($("n-questions").value),
    n_answers: Number($("n-answers").value),
    stop_on_no_gain: $("stop-on-no-gain").checked,
  };
  if (bank) body.question_bank_name = bank;
  busy($("start"), true);
  try {
    $("transcript").replaceChildren();
    $("final").hidden = true;
    render(await turn("/v1/sessions", body, $("start")));
  } catch (error) { showError(error); } finally { busy($("start"), false); }
});

// Structured answers: one button per option (sent as its code, stored as its display text);
// the text box stays for anything else.
function renderOptions(q) {
  const box = $("answer-options");
  const options = (q && q.answer_options) || [];
  box.hidden = options.length === 0;
  $("answer").required = options.length === 0;
  box.replaceChildren(...options.map((option) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "secondary";
    button.dataset.code = option.code;
    button.textContent = option.display;
    button.addEventListener("click", () => sendAnswer({ option: option.code }, option.display, button));
    return button;
  }));
}

async function sendAnswer(payload, shown, button) {
  const question = session.next_question;
  const others = [...document.querySelectorAll("#answer-options button, #submit-answer")].filter((b) => b !== button);
  others.forEach((b) => { b.disabled = true; });  // one answer per question, even on a double click
  busy(button, true);
  try {
    const next = await turn(`/v1/sessions/${session.id}/answers`, { question_id: question.id, ...payload }, button);
    addTranscript(question.text, shown);
    $("answer").value = "";
    render(next);
  } catch (error) { showError(error); } finally {
    busy(button, false);
    others.forEach((b) => { b.disabled = false; });
  }
}

$("answer-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const answer = $("answer").value.trim();
  if (!answer) { showError(new Error("Type the patient's answer, or pick one of the options.")); return; }
  await sendAnswer({ answer }, answer, $("submit-answer"));
});

$("new-interview").addEventListener("click", () => {
  $("start-form").hidden = false;
  $("start-form").scrollIntoView();
});

$("finalize").addEventListener("click", async () => {
  busy($("finalize"), true);
  try { render(await call("POST", `/v1/sessions/${session.id}/finalize`)); }
  catch (error) { showError(error); } finally { busy($("finalize"), false); }
});

$("export-fhir").addEventListener("click", async () => {
  busy($("export-fhir"), true);
  try {
    const bundle = await call("GET", `/v1/sessions/${session.id}/fhir`);
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([JSON.stringify(bundle, null, 2)], { type: "application/fhir+json" }));
    link.download = `pursuit-${session.id}.fhir.json`;
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  } catch (error) { showError(error); } finally { busy($("export-fhir"), false); }
});
