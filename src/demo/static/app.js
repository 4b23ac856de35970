// neka demo page: plain JavaScript, no build step. Every number drawn comes from the JSON API.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);

// POSTs `body` to `url`; resolves to the JSON answer, or throws the API's {"error": …} message.
async function post(url, body, type = "application/json") {
  const res = await fetch(url, { method: "POST", headers: { "Content-Type": type }, body });
  const json = await res.json().catch(() => ({ error: `HTTP ${res.status}` }));
  if (!res.ok) throw new Error(json.error || `HTTP ${res.status}`);
  return json;
}

function showError(panel, err) {
  const p = $(".error", panel);
  p.textContent = err ? String(err.message || err) : "";
  p.hidden = !err;
}

// 0..1 → a colour from dark blue through teal to yellow (viridis-like).
function heat(v) {
  const t = Math.max(0, Math.min(1, v));
  const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const x = t * (stops.length - 1), i = Math.min(stops.length - 2, Math.floor(x)), f = x - i;
  const c = stops[i].map((a, k) => Math.round(a + f * (stops[i + 1][k] - a)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

// Puts gray values (0..255, row-major) into a canvas of width × height.
function paintGray(canvas, values, width, height) {
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(width, height);
  for (let i = 0; i < width * height; i++) {
    const v = values[i];
    img.data.set([v, v, v, 255], 4 * i);
  }
  ctx.putImageData(img, 0, 0);
}

// A heatmap table: one row per `rows` label, one column per `cols` label, values 0..1.
function heatTable(caption, rows, cols, values, cls) {
  const t = document.createElement("table");
  t.className = `heat ${cls}`;
  const cap = t.createCaption();
  cap.textContent = caption;
  const head = t.createTHead().insertRow();
  head.appendChild(document.createElement("th"));
  for (const c of cols) {
    const th = document.createElement("th");
    th.textContent = c;
    head.appendChild(th);
  }
  const body = t.createTBody();
  rows.forEach((r, i) => {
    const tr = body.insertRow();
    const th = document.createElement("th");
    th.textContent = r;
    tr.appendChild(th);
    values[i].forEach((v) => {
      const td = tr.insertCell();
      td.style.background = heat(v);
      td.textContent = v.toFixed(2);
      td.title = `${r} · ${cols[tr.cells.length - 2]}: ${v.toFixed(3)}`;
    });
  });
  return t;
}

// ---------- 1. CNN ----------
const cnn = $("#cnn");
const pad = $("#pad");
const pen = pad.getContext("2d");
let drawing = false, last = null, pending = null;

function clearPad() {
  pen.fillStyle = "#000";
  pen.fillRect(0, 0, pad.width, pad.height);
}

function at(e) {
  const r = pad.getBoundingClientRect();
  return [(e.clientX - r.left) * (pad.width / r.width), (e.clientY - r.top) * (pad.height / r.height)];
}

pad.addEventListener("pointerdown", (e) => {
  drawing = true;
  last = at(e);
  pad.setPointerCapture(e.pointerId);
});
pad.addEventListener("pointermove", (e) => {
  if (!drawing) return;
  const p = at(e);
  pen.strokeStyle = "#fff";
  pen.lineWidth = 20;
  pen.lineCap = pen.lineJoin = "round";
  pen.beginPath();
  pen.moveTo(...last);
  pen.lineTo(...p);
  pen.stroke();
  last = p;
  if ($("#live").checked && !pending) pending = setTimeout(() => { pending = null; classify(); }, 150);
});
for (const ev of ["pointerup", "pointercancel"]) {
  pad.addEventListener(ev, () => {
    if (!drawing) return;
    drawing = false;
    classify();
  });
}
$("#clear").addEventListener("click", () => {
  clearPad();
  $("#cnn-class").textContent = "–";
  $("#bars").replaceChildren();
  $("#maps").replaceChildren();
  paintGray($("#seen"), new Array(784).fill(0), 28, 28);
});

let classifying = 0;
async function classify() {
  const ticket = ++classifying;
  const png = await new Promise((ok) => pad.toBlob(ok, "image/png"));
  try {
    const r = await post("/api/classify?centre=true", png, "image/png");
    if (ticket !== classifying) return; // a newer stroke's answer is on its way
    showError(cnn, null);
    showDigit(r);
  } catch (err) {
    showError(cnn, err);
  }
}

function showDigit(r) {
  $("#cnn-class").textContent = r.class;
  const bars = $("#bars");
  bars.replaceChildren();
  const best = r.probabilities.indexOf(Math.max(...r.probabilities));
  r.probabilities.forEach((p, i) => {
    const name = document.createElement("span");
    name.textContent = r.classes[i];
    const bar = document.createElement("div");
    bar.className = i === best ? "bar best" : "bar";
    bar.style.width = `${(100 * p).toFixed(1)}%`;
    const val = document.createElement("span");
    val.textContent = `${(100 * p).toFixed(1)} %`;
    bars.append(name, bar, val);
  });
  // The normalised input, stretched back to 0..255 for display.
  const lo = Math.min(...r.input), hi = Math.max(...r.input);
  const gray = r.input.map((v) => (hi > lo ? Math.round((255 * (v - lo)) / (hi - lo)) : 0));
  paintGray($("#seen"), gray, r.input_size, r.input_size);
  const maps = $("#maps");
  maps.replaceChildren();
  for (const f of r.feature_maps) {
    const box = document.createElement("div");
    box.className = "maps";
    const h = document.createElement("h3");
    h.textContent = `feature maps after ${f.name}: ${f.channels} channels of ${f.height}×${f.width} (each scaled to its own maximum)`;
    const grid = document.createElement("div");
    grid.className = "grid";
    f.maps.forEach((m, c) => {
      const cv = document.createElement("canvas");
      paintGray(cv, m, f.width, f.height);
      cv.title = `${f.name} channel ${c}: max ${f.max[c].toFixed(3)}`;
      grid.appendChild(cv);
    });
    box.append(h, grid);
    maps.appendChild(box);
  }
}

// ---------- 2. POS tagging ----------
const tagPanel = $("#tag");
const TAG_COLOURS = {
  NOUN: "#8dd3c7", PROPN: "#b3de69", VERB: "#fb8072", AUX: "#fdb462", ADJ: "#ffffb3",
  ADV: "#bebada", PRON: "#80b1d3", DET: "#fccde5", ADP: "#d9d9d9", CCONJ: "#bc80bd",
  SCONJ: "#ccebc5", NUM: "#ffed6f", PART: "#e5c494", INTJ: "#f4a582", PUNCT: "#eeeeee",
  SYM: "#c7eae5", X: "#cccccc",
};

$("#tag-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  try {
    const r = await post("/api/tag", JSON.stringify({ sentence: $("#sentence").value }));
    showError(tagPanel, null);
    showTags(r);
  } catch (err) {
    showError(tagPanel, err);
    $("#tokens").replaceChildren();
    $("#gates").replaceChildren();
  }
});

function showTags(r) {
  const box = $("#tokens");
  box.replaceChildren();
  r.tokens.forEach((w, i) => {
    const t = document.createElement("span");
    t.className = "tok";
    t.dataset.tag = r.tags[i];
    t.style.background = TAG_COLOURS[r.tags[i]] || "#ddd";
    const b = document.createElement("b");
    b.textContent = w;
    const s = document.createElement("small");
    s.textContent = `${r.tags[i]} ${(100 * r.probabilities[i]).toFixed(0)} %`;
    t.title = r.top[i].map(([tag, p]) => `${tag} ${(100 * p).toFixed(1)} %`).join("\n");
    t.append(b, s);
    box.appendChild(t);
  });
  const gates = $("#gates");
  gates.replaceChildren();
  const g = r.gates;
  if (g.error) {
    gates.textContent = `no gate trace: ${g.error}`;
    return;
  }
  const intro = document.createElement("p");
  intro.className = "hint";
  intro.textContent = `The ${g.layer}: each gate's activation (0 = closed, 1 = open) per token, ` +
    `for the ${g.units.length} of its ${g.hidden_size} units whose forget gate varies most, and the mean over all units. ` +
    "C_t = f⊙C_{t−1} + i⊙C~_t, h_t = o⊙tanh(C_t).";
  gates.appendChild(intro);
  for (const [name, sym] of [["forget", "f"], ["input", "i"], ["output", "o"]]) {
    const rows = ["mean", ...g.units.map((u) => `unit ${u}`)];
    const values = [g.mean[name], ...g.units.map((_, k) => g[name].map((row) => row[k]))];
    gates.appendChild(heatTable(`${name} gate ${sym}_t`, rows, r.tokens, values, `gate-${name}`));
  }
}

// ---------- 3. Translation ----------
const trPanel = $("#translate");
for (const li of $("#examples").children) {
  li.addEventListener("click", () => {
    $("#text").value = li.textContent;
    $("#tr-form").requestSubmit();
  });
}

$("#tr-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const beam = Number($("#beam").value);
  try {
    const r = await post("/api/translate", JSON.stringify({ text: $("#text").value, beam }));
    showError(trPanel, null);
    $("#translation").textContent = r.translation;
    const att = $("#attention");
    att.replaceChildren();
    if (r.attention.length) {
      const how = beam === 1 ? "greedy search" : `beam search, k = ${beam}`;
      att.appendChild(heatTable(`attention (${how}): rows are output tokens, columns source tokens`,
        r.rows, r.source, r.attention, "attention-map"));
    } else {
      att.textContent = "this model has no attention";
    }
  } catch (err) {
    showError(trPanel, err);
    $("#translation").textContent = "–";
    $("#attention").replaceChildren();
  }
});

// ---------- which models are loaded ----------
async function health() {
  const note = $("#health");
  try {
    const h = await (await fetch("/api/health")).json();
    const panels = { cnn: cnn, tagger: tagPanel, translator: trPanel };
    const loaded = [];
    for (const [key, panel] of Object.entries(panels)) {
      const m = h.models[key];
      const missing = $(".missing", panel);
      if (m.loaded) {
        loaded.push(`${m.model.name} (${m.model.dataset}, from ${m.source})`);
      } else {
        missing.textContent = `This model is not loaded (${m.source}): ${m.error}`;
        missing.hidden = false;
        for (const el of panel.querySelectorAll("button, input, select")) el.disabled = true;
      }
    }
    note.textContent = loaded.length ? `Loaded: ${loaded.join("; ")}.` : "No model is loaded.";
    if (h.limits) $("#max-words").textContent = h.limits.tag_max_words;
  } catch (err) {
    note.textContent = `cannot reach the server: ${err.message}`;
  }
}

clearPad();
paintGray($("#seen"), new Array(784).fill(0), 28, 28);
health();
