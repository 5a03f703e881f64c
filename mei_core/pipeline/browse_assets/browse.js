// The results browser (mei_core/pipeline/browse.py writes the data and inlines this file).
// Hand-written, no library: it must open from the file system with no network. The state lives in
// the URL's hash (#sort=-score&filter=method=default&page=2, #neuron=<ensemble>/<id>,
// #compare=<ensemble>/<grid>), so every view can be bookmarked, reloaded and tested.
"use strict";
(function () {
  const DATA = window.MEI_BROWSER_DATA;
  const view = document.getElementById("view");
  if (!DATA) return; // the message in the page says which file is missing
  const ROWS = DATA.rows, COL = ROWS.columns, COUNT = ROWS.count, CODES = ROWS.codes;
  const ENSEMBLES = DATA.ensembles;
  const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"];
  const CHANNEL_COLOURS = { 1: ["#333"], 2: ["#2ca02c", "#c2185b"], 3: ["#d62728", "#2ca02c", "#1f77b4"] };

  // ------------------------------------------------------------------ columns of the table
  const hasFlags = "quality_flags" in COL;
  const COLUMNS = [
    { key: "ensemble", label: "ensemble", text: true },
    { key: "method", label: "method", text: true },
    { key: "seed", label: "seed" },
    { key: "neuron", label: "neuron" },
    { key: "mei_index", label: "mei" },
    { key: "score", label: "score" },
    { key: "heldout", label: "held-out" },
    { key: "truth", label: "truth", title: "ground truth: the ensemble's first of filter_correlation, spatial_correlation, target_rmse" },
  ].concat(hasFlags ? [{ key: "quality_flags", label: "flags", text: true }] : [], [
    { key: "n_iterations", label: "iterations" },
    { key: "stop_reason", label: "stop", text: true },
    { key: "status", label: "status", text: true },
  ]);
  const BY_KEY = Object.fromEntries(COLUMNS.map(c => [c.key, c]));

  function cell(key, i) {
    const v = COL[key][i];
    if (CODES[key]) return CODES[key][v];
    return v;
  }
  function fmt(v) {
    if (v === null || v === undefined) return "";
    if (typeof v !== "number") return String(v);
    if (Number.isInteger(v)) return String(v);
    return Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-3 && v !== 0) ? v.toExponential(2) : v.toPrecision(3);
  }
  function esc(s) {
    return String(s).replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }

  // ------------------------------------------------------------------ state in the hash
  function readHash() {
    const params = new URLSearchParams(location.hash.replace(/^#/, ""));
    return Object.fromEntries(params.entries());
  }
  function hashOf(state) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(state)) if (v !== undefined && v !== null && v !== "") params.set(k, v);
    return "#" + params.toString();
  }

  // ------------------------------------------------------------------ thumbnails from the sprite sheets
  // One sheet holds per_sheet thumbnails, row-major in `columns`; thumbnail number t of a method is
  // the MEI (seed, neuron, mei_index) in the order draw_thumbnails drew them. `box`: displayed size
  // of the longest side in px; `contrast`: own scale ÷ the common scale (1: the MEI's own scale).
  function thumb(i, box, contrast) {
    const ensemble = ENSEMBLES[cell("ensemble", i)];
    const method = ensemble && ensemble.methods[cell("method", i)];
    const t = COL.thumb[i];
    if (!method || t < 0) return `<span class="thumb" title="no picture"></span>`;
    const [h, w] = ensemble.cell, zoom = box / Math.max(h, w);
    const within = t % ensemble.per_sheet, sheet = method.sheets[Math.floor(t / ensemble.per_sheet)];
    const x = (within % ensemble.columns) * w * zoom, y = Math.floor(within / ensemble.columns) * h * zoom;
    const filter = contrast !== undefined && contrast !== null && isFinite(contrast) ? `filter:contrast(${contrast.toFixed(4)});` : "";
    return `<span class="thumb" style="width:${w * zoom}px;height:${h * zoom}px;background-image:url('${sheet}');` +
      `background-position:-${x}px -${y}px;background-size:${ensemble.columns * w * zoom}px auto;${filter}"></span>`;
  }

  // ------------------------------------------------------------------ filter and sort
  // Filter terms, all of which must hold: key=value, key!=value, key>x, key<x, key>=x, key<=x,
  // key~text (contains); a bare word is looked for in ensemble, method, stop, status and flags.
  const ALIASES = { neuron_id: "neuron", heldout_score: "heldout", "held-out": "heldout", stop: "stop_reason", flags: "quality_flags", mei: "mei_index", iterations: "n_iterations" };
  function matcher(filter) {
    const tests = [];
    for (const term of (filter || "").trim().split(/\s+/).filter(Boolean)) {
      const m = term.match(/^([\w-]+)(!=|>=|<=|=|>|<|~)(.*)$/);
      if (!m) {
        const word = term.toLowerCase();
        const keys = ["ensemble", "method", "stop_reason", "status"].concat(hasFlags ? ["quality_flags"] : []);
        tests.push(i => keys.some(k => String(cell(k, i)).toLowerCase().includes(word)));
        continue;
      }
      const key = ALIASES[m[1]] || m[1], op = m[2], raw = m[3];
      if (!(key in COL)) throw new Error(`unknown column '${m[1]}' (columns: ${COLUMNS.map(c => c.key).join(", ")})`);
      const number = Number(raw), numeric = !CODES[key];
      if (numeric && raw !== "" && isNaN(number) && op !== "~") throw new Error(`'${term}': ${key} is a number`);
      tests.push(i => {
        const v = cell(key, i);
        if (op === "~") return String(v).toLowerCase().includes(raw.toLowerCase());
        if (op === "=") return numeric ? v === number : v === raw;
        if (op === "!=") return numeric ? v !== number : v !== raw;
        if (v === null) return false;
        const a = numeric ? v : String(v), b = numeric ? number : raw;
        return op === ">" ? a > b : op === "<" ? a < b : op === ">=" ? a >= b : a <= b;
      });
    }
    return i => tests.every(test => test(i));
  }
  function selectRows(filter, sort) {
    const test = matcher(filter);
    let rows = [];
    for (let i = 0; i < COUNT; i++) if (test(i)) rows.push(i);
    if (sort) {
      const descending = sort.startsWith("-"), key = ALIASES[sort.replace(/^-/, "")] || sort.replace(/^-/, "");
      if (!(key in COL)) throw new Error(`cannot sort by '${sort}'`);
      const sign = descending ? -1 : 1;
      const values = COL[key], names = CODES[key];
      rows.sort((a, b) => {
        let x = values[a], y = values[b];
        if (names) { x = names[x]; y = names[y]; }
        if (x === null && y === null) return a - b;
        if (x === null) return 1; // missing values last either way
        if (y === null) return -1;
        return x < y ? -sign : x > y ? sign : a - b;
      });
    }
    return rows;
  }

  // ------------------------------------------------------------------ views
  function nav() {
    const parts = Object.entries(ENSEMBLES).map(([name, e]) => {
      let count = 0;
      const code = CODES.ensemble.indexOf(name);
      for (let i = 0; i < COUNT; i++) if (COL.ensemble[i] === code) count++;
      const grids = Object.keys(e.grids).map(g => `<a href="#compare=${encodeURIComponent(name + "/" + g)}">${esc(g)}</a>`).join(" ");
      return `<span><a href="${hashOf({ filter: "ensemble=" + name })}">${esc(name)}</a> (${e.kind}, ${count} MEIs) ` +
        `<a href="#compare=${encodeURIComponent(name + "/*")}">methods side by side</a>${grids ? " · grids: " + grids : ""}</span>`;
    });
    document.getElementById("nav").innerHTML = parts.join("");
  }

  function tableView(state) {
    const per = Math.max(1, parseInt(state.per || "100", 10));
    let rows, error = "";
    try { rows = selectRows(state.filter, state.sort); } catch (e) { rows = []; error = e.message; }
    const pages = Math.max(1, Math.ceil(rows.length / per));
    const page = Math.min(Math.max(0, parseInt(state.page || "0", 10)), pages - 1);
    const shown = rows.slice(page * per, (page + 1) * per);
    const sortKey = (state.sort || "").replace(/^-/, "");
    const head = [`<th class="text">picture</th>`].concat(COLUMNS.map(c => {
      const next = state.sort === c.key ? "-" + c.key : c.key;
      return `<th class="${c.text ? "text " : ""}${sortKey === c.key ? "sorted" : ""}" data-key="${c.key}"${c.title ? ` title="${esc(c.title)}"` : ""}>` +
        `<a href="${hashOf({ ...state, sort: next, page: 0 })}">${c.label}${sortKey === c.key ? (state.sort.startsWith("-") ? " ▼" : " ▲") : ""}</a></th>`;
    }));
    const body = shown.map(i => {
      const ensemble = cell("ensemble", i), neuron = cell("neuron", i);
      const tds = COLUMNS.map(c => {
        let v = fmt(cell(c.key, i));
        if (c.key === "neuron") v = `<a href="#neuron=${encodeURIComponent(ensemble + "/" + neuron)}">${v}</a>`;
        const klass = c.key === "quality_flags" ? "flags" : c.key === "status" && v !== "ok" ? "text bad" : c.text ? "text" : "";
        return `<td class="${klass}" data-key="${c.key}">${v}</td>`;
      });
      return `<tr data-row="${i}" data-ensemble="${esc(ensemble)}" data-method="${esc(cell("method", i))}" data-seed="${cell("seed", i)}" ` +
        `data-neuron="${neuron}" data-mei="${cell("mei_index", i)}" data-score="${COL.score[i] === null ? "" : COL.score[i]}">` +
        `<td class="text">${thumb(i, 40)}</td>${tds.join("")}</tr>`;
    });
    const link = p => hashOf({ ...state, page: p });
    const pager = `<span class="pager">page ${page + 1} of ${pages}` +
      (page > 0 ? ` <a href="${link(0)}">first</a><a href="${link(page - 1)}">previous</a>` : "") +
      (page < pages - 1 ? `<a href="${link(page + 1)}">next</a><a href="${link(pages - 1)}">last</a>` : "") + `</span>`;
    view.innerHTML =
      `<div class="controls"><label>filter <input type="text" id="filter" value="${esc(state.filter || "")}" ` +
      `placeholder="method=default seed=0 score>1 stop~converged"></label>` +
      `<span id="summary" data-view="table" data-matching="${rows.length}" data-shown="${shown.length}" data-total="${COUNT}">` +
      `${rows.length} of ${COUNT} MEIs</span>${pager}` +
      `<label>rows per page <select id="per">${[50, 100, 200, 500, 1000].map(n => `<option${n === per ? " selected" : ""}>${n}</option>`).join("")}</select></label></div>` +
      (error ? `<p class="bad" id="error">${esc(error)}</p>` : "") +
      `<p class="hint">Click a column to sort (again: descending); a neuron id opens its page. Filter terms: key=value, key>x, key&lt;x, key~text, or a word.` +
      ` Thumbnails: each on its own scale around the stimulus mean.</p>` +
      `<table id="meis"><thead><tr>${head.join("")}</tr></thead><tbody>${body.join("")}</tbody></table>`;
    const input = document.getElementById("filter");
    input.addEventListener("change", () => { location.hash = hashOf({ ...state, filter: input.value, page: 0 }); });
    document.getElementById("per").addEventListener("change", e => { location.hash = hashOf({ ...state, per: e.target.value, page: 0 }); });
  }

  function rowsOf(ensemble, predicate) {
    const code = CODES.ensemble.indexOf(ensemble), rows = [];
    for (let i = 0; i < COUNT; i++) if (COL.ensemble[i] === code && predicate(i)) rows.push(i);
    return rows;
  }

  function neuronView(spec) {
    const slash = spec.lastIndexOf("/"), name = spec.slice(0, slash), neuron = Number(spec.slice(slash + 1));
    const ensemble = ENSEMBLES[name];
    if (!ensemble) { view.innerHTML = `<p class="bad" id="error">No ensemble '${esc(name)}'.</p>`; return; }
    const rows = rowsOf(name, i => COL.neuron[i] === neuron);
    if (!rows.length) { view.innerHTML = `<p class="bad" id="error">No MEIs of neuron ${neuron} in ${esc(name)}.</p>`; return; }
    // one colour scale for all of the neuron's MEIs: the stimulus mean ± the largest deviation among them
    const common = Math.max(...rows.map(i => COL.limit[i] || 0)) || 1;
    const position = ensemble.neurons.indexOf(neuron);
    const neighbour = step => ensemble.neurons[position + step];
    const methods = [...new Set(rows.map(i => cell("method", i)))];
    const zoom = ensemble.kind === "connectome" ? 96 : 112;
    const blocks = methods.map((method, m) => {
      const mine = rows.filter(i => cell("method", i) === method).sort((a, b) => COL.seed[a] - COL.seed[b] || COL.mei_index[a] - COL.mei_index[b]);
      const figures = mine.map(i => {
        const key = `${method}|${COL.seed[i]}|${COL.mei_index[i]}`;
        const truth = COL.truth[i] === null ? "" : `<br>${esc(ensemble.truth)} ${fmt(COL.truth[i])}`;
        const flags = hasFlags && cell("quality_flags", i) ? `<br><span class="bad">${esc(cell("quality_flags", i))}</span>` : "";
        return `<figure class="mei" data-method="${esc(method)}" data-seed="${COL.seed[i]}" data-mei="${COL.mei_index[i]}">` +
          thumb(i, zoom, COL.limit[i] === null ? null : COL.limit[i] / common) +
          `<figcaption>seed ${COL.seed[i]}${COL.mei_index[i] ? " · mei " + COL.mei_index[i] : ""}<br>score ${fmt(COL.score[i])}` +
          `${COL.heldout[i] === null ? "" : " · held-out " + fmt(COL.heldout[i])}${truth}<br>${fmt(COL.n_iterations[i])} it., ${esc(cell("stop_reason", i))}${flags}</figcaption>` +
          (ensemble.kind === "video" ? `<div class="temporal" data-key="${esc(key)}"></div>` : "") + `</figure>`;
      });
      return `<div class="method-row"><h3><span class="swatch" style="background:${PALETTE[m % PALETTE.length]}"></span>${esc(method)}</h3>${figures.join("")}</div>`;
    });
    let clips = "";
    if (ensemble.kind === "video") {
      const gifs = methods.filter(m => ensemble.methods[m] && ensemble.methods[m].gifs).map(m => {
        const entry = ensemble.methods[m], src = entry.gifs + "/" + entry.gif_name.replace("{neuron}", neuron);
        return `<figure class="mei"><img src="${esc(src)}" alt="clip of ${esc(m)}"><figcaption>${esc(m)}: the first seed's first MEI, on its own scale</figcaption></figure>`;
      });
      clips = `<h2>Clips</h2><div class="clips">${gifs.join("")}</div>`;
    }
    const mean = ensemble.kind === "connectome" ? "0" : "[" + ensemble.mean.map(fmt).join(", ") + "]";
    view.innerHTML =
      `<h2 id="summary" data-view="neuron" data-ensemble="${esc(name)}" data-neuron="${neuron}" data-count="${rows.length}">` +
      `${esc(name)} · neuron ${neuron}</h2>` +
      `<p>${neighbour(-1) !== undefined ? `<a href="#neuron=${encodeURIComponent(name + "/" + neighbour(-1))}">← neuron ${neighbour(-1)}</a> ` : ""}` +
      `${neighbour(1) !== undefined ? `<a href="#neuron=${encodeURIComponent(name + "/" + neighbour(1))}">neuron ${neighbour(1)} →</a> ` : ""}` +
      `<a href="${hashOf({ filter: `ensemble=${name} neuron=${neuron}` })}">in the table</a></p>` +
      `<p class="scale" id="scale" data-limit="${common}">All ${rows.length} MEIs on one colour scale: stimulus mean ${mean} ± ${fmt(common)} (mid grey: the mean).` +
      `${ensemble.kind === "video" ? " Videos: the frame of most contrast; under it the time course of its peak pixel per channel." : ""}</p>` +
      `<div class="grid">${blocks.join("")}</div>${clips}<h2>Traces</h2><div class="charts" id="traces">loading traces…</div>`;
    loadTraces(name, Math.floor(position / ensemble.trace_block), payload => showTraces(payload && payload[String(neuron)], methods, ensemble));
  }

  // traces are scripts per block of neurons: a page from file:// may load scripts, not fetch() files
  const traceBlocks = {}, waiting = {};
  window.MEI_BROWSER = {
    addTraces(ensemble, block, payload) {
      const key = ensemble + "/" + block;
      traceBlocks[key] = payload;
      (waiting[key] || []).forEach(done => done(payload));
      delete waiting[key];
    },
  };
  function loadTraces(ensemble, block, done) {
    const key = ensemble + "/" + block;
    if (key in traceBlocks) return done(traceBlocks[key]);
    if (waiting[key]) return waiting[key].push(done);
    waiting[key] = [done];
    const script = document.createElement("script");
    script.src = `${DATA.traces}/${encodeURIComponent(ensemble)}/block${block}.js`;
    script.onerror = () => { const box = document.getElementById("traces"); if (box) box.textContent = `missing ${script.src}`; delete waiting[key]; };
    document.head.appendChild(script);
  }

  function chart(title, series, width, height, xLabel) {
    // series: [{points: [[x...], [y...]], colour, label, dash}]
    const xs = series.flatMap(s => s.points[0]), ys = series.flatMap(s => s.points[1]).filter(v => v !== null);
    if (!ys.length) return "";
    const x0 = Math.min(...xs), x1 = Math.max(...xs) || 1, y0 = Math.min(...ys), y1 = Math.max(...ys);
    const pad = 4, sx = v => pad + (v - x0) / ((x1 - x0) || 1) * (width - 2 * pad), sy = v => height - pad - (v - y0) / ((y1 - y0) || 1) * (height - 2 * pad);
    const lines = series.map(s => {
      const points = s.points[0].map((x, k) => s.points[1][k] === null ? null : `${sx(x).toFixed(1)},${sy(s.points[1][k]).toFixed(1)}`).filter(Boolean).join(" ");
      return `<polyline fill="none" stroke="${s.colour}" stroke-width="1.2"${s.dash ? ` stroke-dasharray="${s.dash}"` : ""} points="${points}"><title>${esc(s.label)}</title></polyline>`;
    });
    const zero = y0 < 0 && y1 > 0 ? `<line x1="0" x2="${width}" y1="${sy(0)}" y2="${sy(0)}" stroke="#ccc"/>` : "";
    return `<div class="chart"><h4>${esc(title)}</h4><svg width="${width}" height="${height}" data-series="${series.length}">${zero}${lines.join("")}</svg>` +
      `<div class="hint">${fmt(y0)} … ${fmt(y1)} over ${xLabel} ${fmt(x0)}–${fmt(x1)}</div></div>`;
  }

  function showTraces(payload, methods, ensemble) {
    const box = document.getElementById("traces");
    if (!box) return;
    const traces = (payload && payload.traces) || {};
    const byTracker = {};
    for (const [key, trackers] of Object.entries(traces)) {
      const [method, seed, index] = key.split("|");
      for (const [tracker, points] of Object.entries(trackers)) {
        (byTracker[tracker] = byTracker[tracker] || []).push({
          points, colour: PALETTE[methods.indexOf(method) % PALETTE.length], label: `${method} seed ${seed} mei ${index}`, dash: Number(index) ? "3,2" : "",
        });
      }
    }
    const legend = `<div class="legend">${methods.map((m, k) => `<span><span class="swatch" style="background:${PALETTE[k % PALETTE.length]}"></span>${esc(m)}</span>`).join("")}</div>`;
    const charts = Object.entries(byTracker).map(([tracker, series]) => chart(tracker, series, 320, 160, "step"));
    box.innerHTML = charts.length ? legend + charts.join("") : "no traces were tracked for this neuron";
    const colours = CHANNEL_COLOURS[ensemble.channels] || CHANNEL_COLOURS[1];
    for (const [key, curves] of Object.entries((payload && payload.temporal) || {})) {
      const target = [...document.querySelectorAll(".temporal")].find(d => d.dataset.key === key);
      if (!target) continue;
      const series = curves.map((values, c) => ({ points: [values.map((_, t) => t), values], colour: colours[c % colours.length], label: `channel ${c}` }));
      target.innerHTML = chart("peak pixel", series, 112, 48, "frame");
    }
  }

  function compareView(spec) {
    const slash = spec.lastIndexOf("/"), name = spec.slice(0, slash), grid = spec.slice(slash + 1);
    const ensemble = ENSEMBLES[name];
    if (!ensemble) { view.innerHTML = `<p class="bad" id="error">No ensemble '${esc(name)}'.</p>`; return; }
    const entry = grid === "*" ? { methods: Object.keys(ensemble.methods), labels: Object.keys(ensemble.methods) } : ensemble.grids[grid];
    if (!entry) { view.innerHTML = `<p class="bad" id="error">No grid '${esc(grid)}' in ${esc(name)}.</p>`; return; }
    const state = readHash(), per = Math.max(1, parseInt(state.per || "50", 10));
    const pages = Math.ceil(ensemble.neurons.length / per), page = Math.min(Math.max(0, parseInt(state.page || "0", 10)), pages - 1);
    const neurons = ensemble.neurons.slice(page * per, (page + 1) * per);
    const firstSeed = Math.min(...rowsOf(name, () => true).map(i => COL.seed[i]));
    const index = {};
    for (const i of rowsOf(name, k => COL.seed[k] === firstSeed && COL.mei_index[k] === 0)) index[cell("method", i) + "|" + COL.neuron[i]] = i;
    const median = (method, key) => {
      const values = rowsOf(name, i => cell("method", i) === method).map(i => COL[key][i]).filter(v => v !== null).sort((a, b) => a - b);
      return values.length ? values[Math.floor((values.length - 1) / 2)] : null;
    };
    const head = entry.methods.map((m, k) => `<th data-method="${esc(m)}">${esc(entry.labels[k])}<br><span class="hint">median score ${fmt(median(m, "score"))}` +
      `<br>held-out ${fmt(median(m, "heldout"))}${ensemble.truth ? `<br>${esc(ensemble.truth)} ${fmt(median(m, "truth"))}` : ""}</span></th>`);
    const body = neurons.map(n => `<tr data-neuron="${n}"><th><a href="#neuron=${encodeURIComponent(name + "/" + n)}">${n}</a></th>` + entry.methods.map(m => {
      const i = index[m + "|" + n];
      return `<td>${i === undefined ? "" : thumb(i, 64) + `<br>${fmt(COL.score[i])}`}</td>`;
    }).join("") + `</tr>`);
    const link = p => "#compare=" + encodeURIComponent(spec) + `&page=${p}&per=${per}`;
    view.innerHTML = `<h2 id="summary" data-view="compare" data-methods="${entry.methods.length}">${esc(name)} · ${grid === "*" ? "every method" : "grid " + esc(grid)}</h2>` +
      `<p class="hint">Seed ${firstSeed}, first MEI of each method, each on its own scale; medians over every seed and MEI. ` +
      `Neurons ${page * per + 1}–${page * per + neurons.length} of ${ensemble.neurons.length}` +
      (page > 0 ? ` <a href="${link(page - 1)}">previous</a>` : "") + (page < pages - 1 ? ` <a href="${link(page + 1)}">next</a>` : "") + `</p>` +
      (entry.figure ? `<p><img src="${esc(entry.figure)}" alt="grid figure" style="max-width:100%"></p>` : "") +
      `<table class="compare"><thead><tr><th>neuron</th>${head.join("")}</tr></thead><tbody>${body.join("")}</tbody></table>`;
  }

  function render() {
    const state = readHash();
    try {
      if (state.neuron) neuronView(state.neuron);
      else if (state.compare) compareView(state.compare);
      else tableView(state);
    } catch (error) {
      view.innerHTML = `<p class="bad" id="error">${esc(error.message)}</p>`;
    }
  }

  nav();
  render();
  // the time from navigation to the first complete view: benchmarks/browse.py and the tests read it
  document.body.dataset.readyMs = performance.now().toFixed(0);
  window.addEventListener("hashchange", () => { render(); window.scrollTo(0, 0); });
})();
