// The study page: settings, player + ROI editor, TIC plots, clinical case, analysis and results.
"use strict";

(function () {
  let study = JSON.parse(document.getElementById("study-data").textContent);
  const base = "/api/studies/" + study.id;
  const $ = (id) => document.getElementById(id);
  let currentTime = 0;
  const ROLE_ORDER = { lesion: 0, reference: 1, vessel: 2, other: 3 };

  // ------------------------------------------------------------ study and settings

  function kvTable(table, rows) {
    table.replaceChildren(...rows.map(([k, v]) => ceus.el("tr", {}, ceus.el("th", { text: k }), ceus.el("td", { text: v }))));
  }

  function renderInfo() {
    const info = study.info;
    kvTable($("meta-table"), [
      ["name", study.display_name], ["format", study.format],
      ["frames", String(info.n_frames)], ["duration", ceus.fmt(info.duration_s) + " s"],
      ["frame rate", ceus.fmt(info.frame_rate_hz) + " frames/s"],
      ["frame size", info.frame_shape[1] + " x " + info.frame_shape[0] + " px"],
      ["pixel size", info.spacing_mm ? info.spacing_mm.map((v) => ceus.fmt(v)).join(" x ") + " mm" : "not declared"],
      ...Object.entries(info.meta).filter(([k]) => k !== "source_name").map(([k, v]) => [k.replace(/_/g, " "), String(v)]),
    ]);
    const p = info.panels;
    $("panel-reason").textContent = p.reason + " (" + p.method + ")";
    const fmtPanel = (q) => (q ? q.bounds_xyxy.join(", ") + " (" + q.source + ")" : "none");
    kvTable($("panel-table"), [["contrast x0,y0,x1,y1", fmtPanel(p.contrast)], ["B-mode x0,y0,x1,y1", fmtPanel(p.bmode)]]);
    $("reader-warnings").replaceChildren(...info.warnings.map((w) => ceus.el("li", { text: w.message })));
    const f = $("settings-form"), s = study.settings;
    f.dynamic_range_db.value = s.dynamic_range_db;
    f.fps.value = s.fps === null ? "" : s.fps;
    f.panel.value = s.panel ? s.panel.join(",") : "auto";
    f.model.value = s.model;
    f.motion.value = s.motion;
    f.reference_frame.value = s.reference_frame === null ? "" : s.reference_frame;
    f.injection_time_s.value = s.injection_time_s === undefined ? 0 : s.injection_time_s;
  }

  $("settings-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target;
    const panelText = f.panel.value.trim();
    const body = {
      dynamic_range_db: Number(f.dynamic_range_db.value),
      fps: f.fps.value === "" ? null : Number(f.fps.value),
      panel: panelText === "" || panelText === "auto" ? null : panelText.split(",").map(Number),
      model: f.model.value, motion: f.motion.value,
      reference_frame: f.reference_frame.value === "" ? null : Number(f.reference_frame.value),
      injection_time_s: f.injection_time_s.value === "" ? 0 : Number(f.injection_time_s.value),
    };
    ceus.status($("settings-status"), "checking the cine with these settings ...");
    try {
      const old = JSON.stringify(study.info.panels);
      study = await ceus.api("PUT", base + "/settings", body);
      ceus.status($("settings-status"), "Settings saved.");
      // Another panel changes the canvases and ROI coordinates: start the page afresh.
      if (JSON.stringify(study.info.panels) !== old) window.location.reload();
      renderInfo();
    } catch (e) {
      ceus.status($("settings-status"), e.message, true);
    }
  });

  // ------------------------------------------------------------ player and ROI editor

  const panelShape = (p) => [p.bounds_xyxy[3] - p.bounds_xyxy[1], p.bounds_xyxy[2] - p.bounds_xyxy[0]];
  const editor = new RoiEditor($("roi-canvas"), panelShape(study.info.panels.contrast), study.rois.rois, saveRois);
  const bmodeCanvas = $("bmode-canvas");
  const bmodePanel = study.info.panels.bmode;
  if (bmodePanel) {
    const [r, c] = panelShape(bmodePanel);
    bmodeCanvas.width = Math.round(c * editor.zoom);
    bmodeCanvas.height = Math.round(r * editor.zoom);
  } else {
    $("bmode-figure").hidden = true;
  }
  let bmodeImage = null;

  function drawBmode() {
    if (!bmodePanel || !bmodeImage) return;
    const ctx = bmodeCanvas.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(bmodeImage, 0, 0, bmodeCanvas.width, bmodeCanvas.height);
    // The same tissue sits under the same panel coordinates on a side-by-side display.
    editor.drawOutlines(ctx, editor.zoom, false);
  }

  const player = new Player(study.id, study.info, { slider: $("frame-slider"), play: $("play"), label: $("frame-time") });
  player.onFrame((index, t, contrast, bmode) => {
    currentTime = t;
    editor.setBackground(contrast);
    bmodeImage = bmode;
    drawBmode();
    moveCursor($("tic-preview"));
    moveCursor($("tic-plot"));
  });

  for (const b of document.querySelectorAll("button.tool")) {
    b.addEventListener("click", () => setTool(b.dataset.tool));
  }
  const HINTS = {
    edit: "click an ROI to select it; drag it, its vertices or its handles; Delete removes it",
    polygon: "click the vertices; click the first vertex again (or press Enter) to close",
    ellipse: "press at the centre and drag to a corner of the enclosing box",
  };
  function setTool(tool) {
    editor.setTool(tool);
    for (const b of document.querySelectorAll("button.tool")) b.classList.toggle("active", b.dataset.tool === tool);
    $("finish-polygon").hidden = tool !== "polygon";
    $("tool-hint").textContent = HINTS[tool];
  }
  $("new-role").addEventListener("change", (e) => { editor.newRole = e.target.value; });
  $("finish-polygon").addEventListener("click", () => editor.finishPolygon());

  function renderRoiList() {
    const rows = editor.rois.map((roi, i) => {
      const name = ceus.el("input", { type: "text", value: roi.name, class: "roi-name", "aria-label": "ROI name" });
      name.addEventListener("change", () => editor.rename(i, name.value.trim()));
      const role = ceus.el("select", { class: "roi-role", "aria-label": "ROI role" },
        ...Object.keys(ROLE_ORDER).map((r) => ceus.el("option", { text: r })));
      role.value = roi.role;
      role.addEventListener("change", () => editor.setRole(i, role.value));
      const del = ceus.el("button", { type: "button", class: "roi-delete", text: "Delete" });
      del.addEventListener("click", () => editor.remove(i));
      const tr = ceus.el("tr", { "data-name": roi.name }, ceus.el("td", {}, name), ceus.el("td", {}, role),
        ceus.el("td", { text: roi.polygon ? "polygon (" + roi.polygon.length + " points)" : "ellipse" }), ceus.el("td", {}, del));
      tr.addEventListener("click", (e) => { if (e.target === tr || e.target.tagName === "TD") editor.select(i); });
      return tr;
    });
    $("roi-list").tBodies[0].replaceChildren(...rows);
  }

  let saving = Promise.resolve();
  function saveRois(rois) {
    renderRoiList();
    drawBmode();
    // Saves run one after another so the server ends with the latest ROIs.
    saving = saving.then(async () => {
      ceus.status($("roi-status"), "saving ROIs ...");
      try {
        await ceus.api("PUT", base + "/rois", { space: "panel", rois });
        ceus.status($("roi-status"), "ROIs saved (" + rois.length + ").");
        refreshPreview();
      } catch (e) {
        ceus.status($("roi-status"), "Not saved: " + e.message, true);
      }
    });
  }

  $("import-rois").addEventListener("change", async (ev) => {
    const file = ev.target.files[0];
    if (!file) return;
    try {
      const doc = JSON.parse(await file.text());
      const saved = await ceus.api("PUT", base + "/rois", doc);
      editor.replace(saved.rois);
      renderRoiList();
      drawBmode();
      ceus.status($("roi-status"), "ROIs imported (" + saved.rois.length + ").");
      refreshPreview();
    } catch (e) {
      ceus.status($("roi-status"), "Import refused: " + e.message, true);
    }
    ev.target.value = "";
  });

  // ------------------------------------------------------------ TIC plots

  const ROLE_COLOURS_PLOT = { lesion: "#d62728", reference: "#1f77b4", vessel: "#bcbd22", other: "#9467bd" };

  function cursorShape() {
    return [{ type: "line", xref: "x", yref: "paper", x0: currentTime, x1: currentTime, y0: 0, y1: 1,
      line: { color: "#444", width: 1, dash: "dot" } }];
  }

  function moveCursor(div) {
    if (div && div.data && window.Plotly) Plotly.relayout(div, { shapes: cursorShape() });
  }

  function plotLayout(title) {
    return { title: { text: title, font: { size: 14 } }, margin: { t: 36, r: 10, b: 80, l: 64 }, height: 350,
      xaxis: { title: { text: "time (s)" } }, yaxis: { title: { text: "linear power (a.u.)" } },
      shapes: cursorShape(), legend: { orientation: "h", y: -0.28 } };
  }

  function clickToSeek(div, times) {
    div.on("plotly_click", (ev) => {
      if (!ev.points.length) return;
      const t = ev.points[0].x;
      let best = 0;
      for (let i = 1; i < times.length; i++) if (Math.abs(times[i] - t) < Math.abs(times[best] - t)) best = i;
      player.pause();
      player.show(best);
    });
  }

  async function refreshPreview() {
    const div = $("tic-preview");
    if (!editor.rois.length || !window.Plotly) { if (window.Plotly) Plotly.purge(div); return; }
    try {
      const tic = await ceus.api("GET", base + "/tic-preview");
      const traces = Object.entries(tic.rois).map(([name, r]) => ({
        x: tic.times_s, y: r.intensity, name: ceus.plotText(name), mode: "lines", line: { color: ROLE_COLOURS_PLOT[r.role], width: 1.5 } }));
      await Plotly.react(div, traces, plotLayout("Preview: mean linear power per ROI (no motion correction, no fit)"),
        { responsive: true, displaylogo: false });
      if (!div.dataset.seek) { clickToSeek(div, tic.times_s); div.dataset.seek = "1"; }
    } catch (e) {
      ceus.status($("roi-status"), "TIC preview: " + e.message, true);
    }
  }

  // ------------------------------------------------------------ clinical case

  const caseForm = $("case-form");
  function fillCase(data) {
    if (!caseForm || !data) return;
    for (const input of caseForm.querySelectorAll("[name]")) {
      let v = data;
      for (const part of input.name.split(".")) v = v && typeof v === "object" ? v[part] : undefined;
      input.value = v === undefined || v === null ? "" : String(v);
    }
  }

  function readCase() {
    const out = {};
    for (const input of caseForm.querySelectorAll("[name]")) {
      if (input.value === "") continue;
      let v = input.value;
      if (input.dataset.kind === "number") v = Number(v);
      else if (input.dataset.kind === "bool") v = v === "true";
      const parts = input.name.split(".");
      let node = out;
      for (const p of parts.slice(0, -1)) node = node[p] = node[p] || {};
      node[parts[parts.length - 1]] = v;
    }
    return out;
  }

  if (caseForm) {
    fillCase(study.case);
    caseForm.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      for (const node of caseForm.querySelectorAll(".field-error")) node.textContent = "";
      for (const node of caseForm.querySelectorAll(".invalid")) node.classList.remove("invalid");
      try {
        const saved = await ceus.api("PUT", base + "/case", readCase());
        fillCase(saved.case);
        ceus.status($("case-status"), "Case saved; it is used by the next analysis.");
      } catch (e) {
        const fields = (e.data && e.data.fields) || {};
        let shown = 0;
        for (const [name, msg] of Object.entries(fields)) {
          const box = caseForm.querySelector('.case-field[data-field="' + CSS.escape(name) + '"]');
          if (box) { box.querySelector(".field-error").textContent = msg; box.classList.add("invalid"); shown++; }
        }
        ceus.status($("case-status"), shown ? "Not saved: correct the fields marked below." : "Not saved: " + e.message, true);
      }
    });
  }

  // ------------------------------------------------------------ analysis and results

  function describe(item) {
    if (typeof item === "string") return item;
    if (!item || typeof item !== "object") return String(item);
    const text = item.text || item.name || item.label || item.diagnosis || item.message || JSON.stringify(item);
    return text + (item.source ? " [" + item.source + "]" : "");
  }

  function list(items, cls) {
    return ceus.el("ul", { class: cls || "" }, ...(items || []).map((x) => ceus.el("li", { text: describe(x) })));
  }

  function renderAssessment(a) {
    const box = $("assessment");
    box.replaceChildren();
    if (!a) return;
    box.append(
      ceus.el("h3", { text: "Assessment" }),
      ceus.el("p", { class: "level level-" + a.level, id: "assessment-level",
        text: "Suspicion of a venous neoplasm: " + a.level }));
    if (a.reasons && a.reasons.length) box.append(list(a.reasons));
    if (a.red_flags && a.red_flags.length) {
      box.append(ceus.el("h4", { text: "Red flags" }), ceus.el("ul", { id: "red-flags" },
        ...a.red_flags.map((f) => ceus.el("li", { "data-id": f.id || "" },
          ceus.el("strong", { text: f.text || f.id }),
          f.evidence ? ceus.el("div", { class: "evidence", text: f.evidence }) : "",
          f.source ? ceus.el("div", { class: "source", text: "Source: " + f.source }) : ""))));
    }
    if (a.differential && a.differential.length) {
      box.append(ceus.el("h4", { text: "Differential" }), ceus.el("ol", { id: "differential" },
        ...a.differential.map((d) => ceus.el("li", {}, ceus.el("span", { text: describe(d).replace(/ \[.*\]$/, "") }),
          d.support && d.support.length ? ceus.el("div", { class: "evidence", text: "for: " + d.support.join("; ") }) : "",
          d.against && d.against.length ? ceus.el("div", { class: "evidence", text: "against: " + d.against.join("; ") }) : "",
          d.source ? ceus.el("div", { class: "source", text: "Source: " + d.source }) : ""))));
    }
    if (a.recommendations && a.recommendations.length) {
      box.append(ceus.el("h4", { text: "Suggested next steps" }), ceus.el("ul", { id: "recommendations" },
        ...a.recommendations.map((r) => ceus.el("li", {}, ceus.el("span", { text: typeof r === "string" ? r : r.text }),
          r.source ? ceus.el("div", { class: "source", text: "Source: " + r.source }) : ""))));
    }
    if (a.missing && a.missing.length) box.append(ceus.el("h4", { text: "Not known (would sharpen the assessment)" }), list(a.missing, "missing"));
    if (a.disclaimer) box.append(ceus.el("p", { class: "disclaimer", text: a.disclaimer }));
  }

  // The contract's findings first, then the evidence behind each (text and source).
  function renderFindings(f) {
    const box = $("findings");
    box.replaceChildren();
    if (!f) return;
    const wo = f.wash_out || {};
    const rows = [
      ["intraluminal enhancement", ceus.fmt(f.intraluminal_enhancement)], ["wash-in", ceus.fmt(f.wash_in)],
      ["enhancement", ceus.fmt(f.enhancement)], ["homogeneity", ceus.fmt(f.homogeneity)],
      ["wash-out", ceus.fmt(wo.present) + (wo.onset_s !== undefined && wo.onset_s !== null
        ? " (from " + ceus.fmt(wo.onset_s) + " s, " + wo.timing + ")" : "")],
      ["necrosis", f.necrosis_percent === undefined || f.necrosis_percent === null ? "n/a" : ceus.fmt(f.necrosis_percent, 3) + " %"],
    ];
    const table = ceus.el("table", { class: "kv", id: "findings-table" });
    kvTable(table, rows);
    box.append(ceus.el("h3", { text: "Findings" }), table);
    const evidence = Object.values(f.evidence || {}).filter((e) => e && e.text);
    if (evidence.length) {
      box.append(ceus.el("ul", { class: "evidence-list" }, ...evidence.map((e) => ceus.el("li", {},
        ceus.el("span", { text: e.text }), e.source ? ceus.el("div", { class: "source", text: "Source: " + e.source }) : ""))));
    }
  }

  function renderParams(results) {
    const names = Object.keys(results.rois).sort((a, b) =>
      (ROLE_ORDER[results.rois[a].role] ?? 9) - (ROLE_ORDER[results.rois[b].role] ?? 9));
    const units = results.units || {};
    const keys = [];
    for (const n of names) for (const k of Object.keys(results.rois[n].perfusion || {})) if (!keys.includes(k)) keys.push(k);
    const head = ceus.el("tr", {}, ceus.el("th", { text: "parameter" }), ceus.el("th", { text: "unit" }),
      ...names.map((n) => ceus.el("th", { text: n + " (" + results.rois[n].role + ")" })));
    const row = (label, unit, values, key) => ceus.el("tr", { "data-key": key }, ceus.el("th", { text: label }),
      ceus.el("td", { class: "unit", text: unit }), ...values.map((v) => ceus.el("td", { class: "num", text: v })));
    const body = [
      row("enhancing", "", names.map((n) => ceus.fmt(results.rois[n].enhancing)), "enhancing"),
      row("model", "", names.map((n) => results.rois[n].model), "model"),
      row("area", "mm2", names.map((n) => ceus.fmt(results.rois[n].area_mm2)), "area_mm2"),
      ...keys.map((k) => row(k.replace(/_s$/, "").replace(/_/g, " "), units[k] || "",
        names.map((n) => ceus.fmt((results.rois[n].perfusion || {})[k])), k)),
    ];
    if (names.some((n) => results.rois[n].necrosis_fraction !== undefined && results.rois[n].necrosis_fraction !== null)) {
      body.push(row("necrosis", "%", names.map((n) => {
        const v = results.rois[n].necrosis_fraction;
        return v === undefined || v === null ? "" : ceus.fmt(100 * v, 3);
      }), "necrosis_percent"));
    }
    $("param-table").replaceChildren(ceus.el("thead", {}, head), ceus.el("tbody", {}, ...body));
  }

  async function renderTic(results) {
    if (!window.Plotly) return;
    const traces = [];
    for (const [name, r] of Object.entries(results.rois)) {
      const colour = ROLE_COLOURS_PLOT[r.role];
      traces.push({ x: r.tic.times_s, y: r.tic.intensity, name: ceus.plotText(name) + " measured", mode: "lines",
        line: { color: colour, width: 1 }, opacity: 0.55 });
      if (r.tic.fitted) traces.push({ x: r.tic.times_s, y: r.tic.fitted, name: ceus.plotText(name) + " fit (" + ceus.plotText(r.model) + ")",
        mode: "lines", line: { color: colour, width: 2.5 } });
    }
    const div = $("tic-plot");
    await Plotly.react(div, traces, plotLayout("Lesion vs reference: measured and fitted curves"),
      { responsive: true, displaylogo: false });
    if (!div.dataset.seek) { clickToSeek(div, study.info.times_s); div.dataset.seek = "1"; }
  }

  async function showResults(analysis) {
    const fileUrl = (name) => "/api/analyses/" + analysis.id + "/files/" + name;
    const results = await ceus.api("GET", fileUrl("results.json"));
    $("results").hidden = false;
    // A running analysis shows its results.json as soon as it is written; the
    // report, the PDF and the maps appear when their files do (see poll).
    $("results-when").textContent = "Analysis " + analysis.id.slice(0, 8) + (analysis.partial
      ? ": results ready; the report, PDF and maps are still being written ..."
      : ", finished " + (analysis.finished || "").replace("T", " ").slice(0, 19) + " (UTC)");
    $("results-when").dataset.partial = analysis.partial ? "1" : "";
    renderAssessment(results.assessment);
    renderParams(results);
    renderFindings(results.findings);
    await renderTic(results);
    const maps = analysis.files.filter((f) => /\.png$/i.test(f) && f.includes("/"));
    $("maps").replaceChildren(...(maps.length ? maps.map((f) => ceus.el("figure", { class: "map" },
      ceus.el("img", { src: fileUrl(f), alt: f, loading: "lazy" }), ceus.el("figcaption", { text: f.split("/").pop() })))
      : [ceus.el("p", { class: "hint", text: "No map overlays in this analysis." })]));
    $("warnings").replaceChildren(...(results.warnings.length ? results.warnings.map((w) =>
      ceus.el("li", { text: w.message + " (" + w.code + ")" })) : [ceus.el("li", { text: "none" })]));
    const wanted = ["report.html", "report.pdf", "results.json", "rois.json"];
    $("downloads").replaceChildren(...wanted.filter((f) => analysis.files.includes(f)).map((f) =>
      ceus.el("li", {}, ceus.el("a", { href: fileUrl(f) + "?download=1", class: "download", text: f }),
        f === "report.html" ? ceus.el("a", { href: fileUrl(f), target: "_blank", text: " (open)" }) : "")));
    $("results-disclaimer").textContent = results.disclaimer || "";
  }

  function showState(a) {
    const bar = $("analysis-progress");
    const busy = a.status === "queued" || a.status === "running";
    bar.hidden = !busy;
    $("run-analysis").disabled = busy;
    const text = a.status === "queued" ? "queued ..." : a.status === "running" ? "running: " + (a.stage || "") + " ..."
      : a.status === "done" ? "done" : "failed: " + a.error;
    ceus.status($("analysis-status"), text, a.status === "failed");
    $("analysis-status").dataset.state = a.status;
  }

  async function poll(id) {
    let shownFiles = "";
    for (;;) {
      const a = await ceus.api("GET", "/api/analyses/" + id);
      showState(a);
      if (a.status === "done") { await showResults(a); return; }
      if (a.status === "failed") return;
      // Shown again only when a link's file appears (maps.json is the maps' last file).
      const ready = ["results.json", "report.html", "report.pdf", "maps/maps.json"]
        .filter((f) => a.files.includes(f)).join(" ");
      if (a.partial && ready !== shownFiles) {
        shownFiles = ready;
        await showResults(a);
      }
      await new Promise((r) => setTimeout(r, 700));
    }
  }

  $("run-analysis").addEventListener("click", async () => {
    try {
      await saving;
      const a = await ceus.api("POST", base + "/analyses");
      showState(a);
      await poll(a.id);
    } catch (e) {
      ceus.status($("analysis-status"), e.message, true);
      $("analysis-progress").hidden = true;
      $("run-analysis").disabled = false;
    }
  });

  // ------------------------------------------------------------ start

  renderInfo();
  renderRoiList();
  setTool(editor.rois.length ? "edit" : "polygon");
  player.show(0);
  refreshPreview();
  if (study.current_analysis) showResults(study.current_analysis).catch((e) => ceus.status($("analysis-status"), e.message, true));
  const latest = study.latest_analysis;
  if (latest) {
    showState(latest);
    if (latest.status === "queued" || latest.status === "running") poll(latest.id);
  }
})();
