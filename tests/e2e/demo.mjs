// End-to-end test of the demo page in a real browser (Debian's chromium, driven by
// playwright-core): start the demo on a free loopback port, draw a 7 stroke by stroke with
// mouse events and check the prediction, tag a sentence and check the tags shown, translate
// an example and check the attention heatmap; screenshots go to the folder given.
//
//   node tests/e2e/demo.mjs DEMO_BINARY SCREENSHOT_DIR      (run by .ci/run)
import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const [bin, shots] = process.argv.slice(2);
if (!bin || !shots) {
  console.error("usage: node demo.mjs DEMO_BINARY SCREENSHOT_DIR");
  process.exit(2);
}
mkdirSync(shots, { recursive: true });
const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

function check(ok, what) {
  if (!ok) throw new Error(`FAILED: ${what}`);
  console.log(`ok: ${what}`);
}

// Starts the demo on 127.0.0.1, port chosen by the OS; resolves to its address.
function startDemo() {
  const server = spawn(bin, ["--port", "0", "--device", "cpu", "--models", join(root, "models")], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const url = new Promise((ok, fail) => {
    let out = "";
    server.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/http:\/\/127\.0\.0\.1:\d+/);
      if (m) ok(m[0]);
    });
    server.on("exit", (code) => fail(new Error(`the demo exited (${code}) before listening: ${out}`)));
    setTimeout(() => fail(new Error("the demo did not print its address within 120 s")), 120_000);
  });
  return { server, url };
}

const { server, url: listening } = startDemo();
process.on("exit", () => server.kill("SIGTERM")); // whatever happens, the demo stops with us
let browser;
try {
  const url = await listening;
  console.log(`demo at ${url}`);
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const page = await browser.newPage({ viewport: { width: 1150, height: 1000 } });
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));
  await page.goto(url);
  await page.waitForFunction(() => document.querySelector("#health").textContent.startsWith("Loaded:"));
  check((await page.locator(".missing:visible").count()) === 0, "all three models loaded");

  // 1. draw a 7: the top bar, then the diagonal, each as mouse down / moves / up
  const pad = await page.locator("#pad").boundingBox();
  const stroke = async (points) => {
    await page.mouse.move(pad.x + points[0][0], pad.y + points[0][1]);
    await page.mouse.down();
    for (const [x, y] of points.slice(1)) await page.mouse.move(pad.x + x, pad.y + y, { steps: 12 });
    await page.mouse.up();
  };
  const answered = () => page.waitForResponse((r) => r.url().endsWith("/api/classify?centre=true"));
  let reply = answered();
  await stroke([[75, 60], [140, 58], [205, 60]]);
  await reply;
  reply = answered();
  await stroke([[205, 60], [175, 120], [150, 175], [130, 235]]);
  await reply;
  await page.waitForFunction(() => document.querySelectorAll("#maps canvas").length > 0);
  const digit = await page.locator("#cnn-class").textContent();
  check(digit === "7", `the drawn 7 is read as ${digit}`);
  check((await page.locator("#bars .bar").count()) === 10, "ten probability bars");
  check((await page.locator("#maps .maps").count()) >= 2, "feature maps after conv1 and conv2");
  await page.locator("#cnn").screenshot({ path: join(shots, "demo-cnn.png") });

  // 2. tag a sentence: the chips show the API's tags
  const sentence = "The quick brown fox jumps over the lazy dog.";
  await page.fill("#sentence", sentence);
  await page.click("#tag-form button");
  await page.waitForSelector("#tokens .tok");
  const shown = await page.locator("#tokens .tok").evaluateAll((els) => els.map((e) => e.dataset.tag));
  const api = await (await page.request.post(`${url}/api/tag`, { data: { sentence } })).json();
  check(JSON.stringify(shown) === JSON.stringify(api.tags), `tags shown: ${shown.join(" ")}`);
  check(shown[0] === "DET" && shown[3] === "NOUN" && shown[4] === "VERB" && shown.at(-1) === "PUNCT",
    "The/DET fox/NOUN jumps/VERB ./PUNCT");
  for (const gate of ["forget", "input", "output"]) {
    const cells = await page.locator(`table.gate-${gate} tbody td`).count();
    check(cells === api.tokens.length * (api.gates.units.length + 1), `${gate}-gate heatmap, ${cells} cells`);
  }
  await page.locator("#tag").screenshot({ path: join(shots, "demo-tag.png") });

  // a sentence over the cap: the page says what is wrong
  await page.fill("#sentence", Array(150).fill("word").join(" "));
  await page.click("#tag-form button");
  await page.waitForSelector("#tag .error:not([hidden])");
  const said = await page.locator("#tag .error").textContent();
  check(said.includes("at most 100"), `too long a sentence: "${said}"`);

  // 3. translate a Multi30k example: an English sentence and an attention heatmap
  await page.click("#examples li >> nth=0");
  await page.waitForSelector("table.attention-map tbody tr");
  const english = await page.locator("#translation").textContent();
  check(english.length > 0 && english !== "–", `translation: ${english}`);
  const rows = await page.locator("table.attention-map tbody tr").count();
  const cols = await page.locator("table.attention-map thead th").count();
  check(rows >= 2 && cols >= 3, `attention heatmap ${rows} × ${cols - 1}`);
  await page.locator("#translate").screenshot({ path: join(shots, "demo-translate.png") });
  await page.screenshot({ path: join(shots, "demo-page.png"), fullPage: true });
  check(pageErrors.length === 0, `no JavaScript errors on the page ${pageErrors.join("; ")}`);
  console.log(`screenshots in ${shots}`);
} catch (e) {
  console.error(e.message || e);
  process.exitCode = 1;
} finally {
  if (browser) await browser.close();
  server.kill("SIGTERM");
}
