// A whole interview on the clinician page in headless Chromium (Debian's), via playwright-core.
//
// Run by tests/browser/test_clinician_page.py against a live server. Input (environment):
//   PURSUIT_URL, PURSUIT_API_KEY, ARTIFACTS (screenshot folder), CHROMIUM (executable),
//   INTERVIEW (JSON: summary, age, sex, candidates, source, policy (default cip), answers,
//   nQuestions, nAnswers, maxQuestions, expectCalibrated; useDefaults: leave the page's
//   defaults as they are). An answer is text to type, or {"option": "<display>"} to click
//   that answer-option button.
// Output: one JSON line on stdout describing what the page showed (with the turns it sent
// and the progress its buttons showed while they ran); exit 1 on any failure.
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const url = process.env.PURSUIT_URL;
const apiKey = process.env.PURSUIT_API_KEY;
const artifacts = process.env.ARTIFACTS;
const interview = JSON.parse(process.env.INTERVIEW);
const TURN_MS = Number(process.env.TURN_TIMEOUT_MS || 180000);

mkdirSync(artifacts, { recursive: true });
const problems = [];
const check = (ok, message) => { if (!ok) throw new Error(`check failed: ${message}`); };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
let page;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
  page = await context.newPage();
  page.setDefaultTimeout(TURN_MS);
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (msg) => { if (msg.type() === "error") problems.push(`console: ${msg.text()}`); });
  // Every turn the page sends (POST /v1/sessions, .../answers): its Prefer header and status.
  const turns = [];
  page.on("response", async (response) => {
    const request = response.request();
    if (request.method() === "POST" && /\/v1\/sessions(\/[^/]+\/answers)?$/.test(new URL(request.url()).pathname)) {
      turns.push({
        path: new URL(request.url()).pathname,
        prefer: (await request.allHeaders()).prefer || null,
        status: response.status(),
        location: response.headers().location || null,
      });
    }
  });

  const idle = () => page.waitForFunction(() => document.body.dataset.busy !== "true");
  const shot = (name) => page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true });
  const errorShown = async () => ((await page.locator("#error").isVisible()) ? page.locator("#error").textContent() : null);

  await page.goto(url);
  // What the busy buttons say while a turn runs ("Working… scored 4 of 6 candidate answers").
  await page.evaluate(() => {
    window.progressSeen = [];
    new MutationObserver(() => {
      for (const id of ["start", "submit-answer"]) {
        const text = document.getElementById(id).textContent;
        if (text.startsWith("Working") && window.progressSeen.at(-1) !== text) window.progressSeen.push(text);
      }
    }).observe(document.body, { subtree: true, childList: true, characterData: true });
  });
  check((await page.title()).includes("Pursuit"), "the page title");
  await page.fill("#api-key", apiKey);
  await page.locator("#api-key").dispatchEvent("change");
  await page.fill("#summary", interview.summary);
  if (interview.age !== undefined) await page.fill("#age", String(interview.age));
  if (interview.sex !== undefined) await page.fill("#sex", interview.sex);
  await page.fill("#candidates", interview.candidates.join("\n"));
  if (!interview.useDefaults) {  // else: the page's own defaults, which are the API's
    await page.selectOption("#policy", interview.policy || "cip");
    await page.fill("#max-questions", String(interview.maxQuestions));
    await page.selectOption("#source", interview.source);
    await page.click("#advanced summary");
    await page.fill("#n-questions", String(interview.nQuestions));
    await page.fill("#n-answers", String(interview.nAnswers));
    await page.setChecked("#stop-on-no-gain", false);
  }
  await shot("01-form");

  // A mouse click here, right after a full-page screenshot with the button below the fold,
  // reaches no handler in headless Chromium (the form never submits); the button's own click
  // event does what a user's click does.
  await page.locator("#start").dispatchEvent("click");
  await page.waitForFunction(() => !document.getElementById("interview").hidden || !document.getElementById("error").hidden);
  await idle();
  check((await errorShown()) === null, `start failed: ${await errorShown()}`);
  await shot("02-first-question");

  const whyFirst = (await page.textContent("#why-body")).trim();
  // Once started, the interview is on top and the form is out of the way.
  const formHiddenAfterStart = await page.isHidden("#start-form");
  const asked = [];
  const optionsShown = [];
  const turnSeconds = [];
  for (const [n, answer] of interview.answers.entries()) {
    const question = (await page.textContent("#question")).trim();
    check(question.length > 0 && (await page.isVisible("#question-box")), `a question at step ${n}`);
    asked.push(question);
    optionsShown.push((await page.isVisible("#answer-options"))
      ? await page.$$eval("#answer-options button", (bs) => bs.map((b) => b.textContent))
      : []);
    const started = Date.now();
    if (typeof answer === "string") {
      await page.fill("#answer", answer);
      await page.click("#submit-answer");
    } else {
      check(optionsShown[n].includes(answer.option), `an option button "${answer.option}" at step ${n}`);
      await page.click(`#answer-options button:text-is("${answer.option}")`);
    }
    await page.waitForFunction(
      (count) => document.querySelectorAll("#transcript li").length === count || !document.getElementById("error").hidden,
      n + 1,
    );
    await idle();
    turnSeconds.push((Date.now() - started) / 1000);
    check((await errorShown()) === null, `answer ${n} failed: ${await errorShown()}`);
    check((await page.textContent("#diff-step")).includes(`after ${n + 1} answer`), `the differential of step ${n + 1}`);
    await shot(`03-after-answer-${n + 1}`);
  }

  if (interview.expectCalibrated) {
    await page.waitForSelector("#calibration:not([hidden])");
    await page.waitForFunction(() => document.getElementById("calibration-plot").naturalWidth > 0);
  }
  await page.click("#finalize");
  await page.waitForFunction(() => !document.getElementById("final").hidden || !document.getElementById("error").hidden);
  await idle();
  check((await errorShown()) === null, `finalize failed: ${await errorShown()}`);
  await shot("04-finalized");
  const clinicianPage = join(artifacts, "clinician-page.png");
  await page.screenshot({ path: clinicianPage, fullPage: true });

  const rows = await page.$$eval("#differential tbody tr", (trs) =>
    trs.map((tr) => ({ cells: [...tr.children].map((td) => td.textContent.trim()), inSet: tr.classList.contains("in-set") })));
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#export-fhir")]);
  const bundlePath = join(artifacts, "bundle.fhir.json");
  await download.saveAs(bundlePath);
  const bundle = JSON.parse(readFileSync(bundlePath, "utf8"));

  const result = {
    banner: (await page.isVisible("#model-banner")) ? (await page.textContent("#model-banner")).trim() : null,
    formHiddenAfterStart,
    asked,
    optionsShown,
    whyFirst,
    turnSeconds,
    transcript: await page.$$eval("#transcript li", (lis) => lis.map((li) => li.textContent)),
    rows,
    coverage: (await page.textContent("#coverage")).trim(),
    coverageUncalibrated: await page.$eval("#coverage", (p) => p.classList.contains("uncalibrated")),
    final: (await page.textContent("#final")).trim(),
    sessionMeta: (await page.textContent("#session-meta")).trim(),
    calibrationShown: await page.isVisible("#calibration"),
    plotWidth: await page.$eval("#calibration-plot", (img) => img.naturalWidth),
    finalizeHidden: await page.isHidden("#finalize"),
    bundleKinds: bundle.entry.map((e) => e.resource.resourceType),
    bundleType: bundle.type,
    downloadName: download.suggestedFilename(),
    turns,
    progressSeen: await page.evaluate(() => window.progressSeen),
    problems,
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
} catch (error) {
  if (page) await page.screenshot({ path: join(artifacts, "failure.png"), fullPage: true }).catch(() => {});
  process.stderr.write(`${error.stack || error}\n${problems.join("\n")}\n`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
