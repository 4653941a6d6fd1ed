// Pursuit clinician page: plain JS over the REST API (no build step).
"use strict";

const $ = (id) => document.getElementById(id);
let session = null;

$("api-key").value = sessionStorage.getItem("pursuit-key") || "";
$("api-key").addEventListener("change", () => sessionStorage.setItem("pursuit-key", $("api-key").value.trim()));

function authorization() { return { Authorization: `Bearer ${$("api-key").value.trim()}` }; }

async function call(method, path, body) {
  $("error").hidden = true;
  const headers = authorization();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = response.status === 204 ? null : await response.json();
  if (!response.ok) {
    const problem = data || {};
    throw new Error(`${problem.title || response.status}: ${problem.detail || ""} (request ${problem.request_id || "?"})`);
  }
  return data;
}

function showError(error) {
  $("error").textContent = error.message;
  $("error").hidden = false;
}

function busy(button, on) {
  document.body.dataset.busy = on ? "true" : "false";
  button.disabled = on;
  button.dataset.label = button.dataset.label || button.textContent;
  button.textContent = on ? "Working… (the model may take a few seconds)" : button.dataset.label;
}

function pct(x) { return `${(100 * x).toFixed(1)}%`; }

function renderDifferential(d) {
  $("diff-step").textContent = `after ${d.step} answer${d.step === 1 ? "" : "s"}`;
  const coverage = $("coverage");
  coverage.textContent = d.calibrated
    ? `The highlighted set contains the right answer with probability ≥ ${pct(d.coverage_target)}, calibrated on ${d.calibration_n} cases. ${d.guarantee}`
    : d.guarantee;
  coverage.classList.toggle("uncalibrated", !d.calibrated);
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
  if (plotFor === d.calibration_id) { figure.hidden = false; return; }
  plotFor = d.calibration_id;
  try {
    const response = await fetch(`/v1/calibrations/${d.calibration_id}/plot.png`, { headers: authorization() });
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
    p.textContent += ` ${q.tied} other candidate(s) scored the same: set sizes are whole numbers, so ties are common; `
      + "the tie was broken by expected entropy, then by the order the candidates came in.";
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
  $("interview").hidden = false;
  $("session-meta").textContent = `${s.id.slice(0, 8)} · ${s.policy} · ${s.model}`;
  renderDifferential(s.differential);
  renderCalibration(s.differential);
  const q = s.next_question;
  $("question-box").hidden = !q;
  if (q) { $("question").textContent = q.text; renderWhy(q); }
  renderOptions(q);
  $("stopped").hidden = !s.should_stop;
  $("stopped").textContent = s.should_stop ? `The interview stopped: ${s.stop_reason}.` : "";
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
    render(await call("POST", "/v1/sessions", body));
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
    const next = await call("POST", `/v1/sessions/${session.id}/answers`, { question_id: question.id, ...payload });
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
