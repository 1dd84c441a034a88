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

  // Reader metadata the compact header already says in words (or that repeat the file's shape).
  const SHOWN_META = new Set(["source_name", "format", "n_frames", "rows", "cols", "frame_time_ms",
    "timing_source", "sop_class", "transfer_syntax", "manufacturer", "modality", "photometric"]);

  function joined(parts) {
    return parts.filter((x) => x !== undefined && x !== null && x !== "").join(", ");
  }

  function renderInfo() {
    const info = study.info, meta = info.meta;
    const fileKind = joined([String(study.format).toUpperCase(), meta.sop_class, meta.transfer_syntax]);
    const timing = ceus.fmt(info.frame_rate_hz) + " frames/s" + (meta.timing_source ? " (" + meta.timing_source + ")" : "");
    const p = info.panels;
    const fmtPanel = (q) => (q ? "x " + q.bounds_xyxy[0] + "–" + q.bounds_xyxy[2] + ", y " + q.bounds_xyxy[1] + "–"
      + q.bounds_xyxy[3] + " px" : "none");
    kvTable($("meta-table"), [
      ["file", fileKind],
      ["cine", info.n_frames + " frames over " + ceus.fmt(info.duration_s) + " s at " + timing],
      ["frame", info.frame_shape[1] + " x " + info.frame_shape[0] + " px; pixel "
        + (info.spacing_mm ? info.spacing_mm.map((v) => ceus.fmt(v)).join(" x ") + " mm" : "size not declared")],
      ["scanner", joined([meta.manufacturer, meta.modality, meta.photometric]) || "not recorded"],
      ["panels", "contrast " + fmtPanel(p.contrast) + "; B-mode " + fmtPanel(p.bmode)],
    ]);
    $("panel-reason").textContent = "Panels: " + p.reason + " (" + p.method + ").";
    const rest = Object.entries(meta).filter(([k]) => !SHOWN_META.has(k));
    kvTable($("panel-table"), rest.map(([k, v]) => [k.replace(/_/g, " "), String(v)]));
    $("more-meta").hidden = rest.length === 0;
    $("reader-warnings").replaceChildren(...info.warnings.map((w) => ceus.el("li", { text: w.message })));
    const f = $("settings-form"), s = study.settings;
    const drAuto = s.dynamic_range_db === "auto";
    f.dynamic_range_auto.checked = drAuto;
    f.dynamic_range_db.disabled = drAuto;
    f.dynamic_range_db.value = drAuto ? 60 : s.dynamic_range_db;
    f.colour_map.value = s.colour_map || "auto";
    f.fps.value = s.fps === null ? "" : s.fps;
    f.panel.value = s.panel ? s.panel.join(",") : "auto";
    f.model.value = s.model;
    f.motion.value = s.motion;
    f.reference_frame.value = s.reference_frame === null ? "" : s.reference_frame;
    f.injection_time_s.value = s.injection_time_s === undefined ? 0 : s.injection_time_s;
  }

  $("settings-form").dynamic_range_auto.addEventListener("change", (ev) => {
    $("settings-form").dynamic_range_db.disabled = ev.target.checked;
  });

  $("settings-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target;
    const panelText = f.panel.value.trim();
    const body = {
      dynamic_range_db: f.dynamic_range_auto.checked ? "auto" : Number(f.dynamic_range_db.value),
      colour_map: f.colour_map.value,
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
      const title = "Preview: mean linear power per ROI (no motion correction, no fit" +
        (tic.note ? "; " + tic.note : "") + ")";
      await Plotly.react(div, traces, plotLayout(title),
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

  // The results section is the report's own content (one partial, rendered by the server from the
  // analysis' results.json); this page only adds the interactive plots and the enlarged maps.
  async function renderMotion(results) {
    const div = $("motion-plot");
    const m = results.motion;
    if (!div || !window.Plotly || !m || !m.dx_px) return;
    const t = study.info.times_s;
    const traces = [
      { x: t, y: m.dx_px, name: "dx (lateral, +right)", mode: "lines", line: { color: "#1f77b4", width: 1 } },
      { x: t, y: m.dy_px, name: "dy (depth, +down)", mode: "lines", line: { color: "#d62728", width: 1 } },
    ];
    const layout = plotLayout("Estimated displacement relative to the reference frame");
    layout.yaxis = { title: { text: "displacement (px)" } };
    await Plotly.react(div, traces, layout, { responsive: true, displaylogo: false });
  }

  function enlargeMaps() {
    const dialog = $("map-dialog");
    for (const link of document.querySelectorAll("#report-content a.map-link")) {
      link.addEventListener("click", (ev) => {
        if (!dialog || typeof dialog.showModal !== "function") return; // the link opens the image
        ev.preventDefault();
        const img = link.querySelector("img");
        $("map-dialog-img").src = link.href;
        $("map-dialog-img").alt = img ? img.alt : "";
        dialog.showModal();
      });
    }
  }
  if ($("map-dialog")) {
    $("map-dialog-close").addEventListener("click", () => $("map-dialog").close());
    $("map-dialog").addEventListener("click", (ev) => { if (ev.target === $("map-dialog")) $("map-dialog").close(); });
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
    const resp = await fetch("/api/analyses/" + analysis.id + "/report-content");
    if (!resp.ok) throw new Error("the results could not be shown (" + resp.status + ")");
    // Server-rendered with every value escaped (Jinja autoescape): the report's own markup.
    $("report-content").innerHTML = await resp.text();
    await renderTic(results);
    await renderMotion(results);
    enlargeMaps();
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
