// PACS actions (only loaded when nodes are configured): on the studies page, query a node and
// retrieve a study's ultrasound cines; on a study page, send the shown analysis' DICOM results.
// Everything that comes from the node or the user is inserted as text, never as HTML.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);

  // <input type="date"> gives YYYY-MM-DD; DICOM wants YYYYMMDD.
  const dicomDate = (value) => (value || "").replace(/-/g, "");
  const showDate = (d) => (/^\d{8}$/.test(d || "") ? d.slice(0, 4) + "-" + d.slice(4, 6) + "-" + d.slice(6) : (d || ""));
  const showTime = (t) => (/^\d{4}/.test(t || "") ? t.slice(0, 2) + ":" + t.slice(2, 4) : (t || ""));
  const count = (v) => (v === null || v === undefined ? "?" : String(v));

  // ------------------------------------------------------------------ studies page: query, retrieve

  const queryForm = $("pacs-query");
  if (queryForm) {
    const status = $("pacs-status");
    const table = $("pacs-results");
    const body = table.querySelector("tbody");

    async function retrieve(node, match, button, cell) {
      button.disabled = true;
      cell.textContent = "";
      ceus.status(status, "retrieving the study's ultrasound cines from " + node + " (C-GET) ...");
      try {
        const out = await ceus.api("POST", "/api/pacs/nodes/" + encodeURIComponent(node) + "/retrieve",
                                   { study_uid: match.study_uid });
        const created = out.studies || [];
        if (!created.length) {
          ceus.status(status, "retrieved from " + node + ": the study has no ultrasound cine", true);
        } else {
          ceus.status(status, "retrieved from " + node + ": " + created.length + " cine" +
                      (created.length > 1 ? "s" : "") + " added as " + (created.length > 1 ? "studies" : "a study"));
        }
        for (const s of created) {
          cell.append(ceus.el("a", { href: "/studies/" + s.id, class: "pacs-study-link", text: s.display_name }), " ");
        }
      } catch (e) {
        ceus.status(status, "retrieve failed: " + e.message, true);
      } finally {
        button.disabled = false;
      }
    }

    queryForm.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const node = $("pacs-node").value;
      const from = dicomDate($("pacs-date-from").value);
      const to = dicomDate($("pacs-date-to").value);
      const date = from && to && from === to ? from : (from || to ? from + "-" + to : "");
      const params = new URLSearchParams({ date, modality: $("pacs-modality").value.trim().toUpperCase() });
      const button = $("pacs-search");
      button.disabled = true;
      ceus.status(status, "searching " + node + " (C-FIND) ...");
      try {
        const found = await ceus.api("GET", "/api/pacs/nodes/" + encodeURIComponent(node) + "/studies?" + params);
        body.replaceChildren();
        for (const m of found) {
          const here = ceus.el("td", { class: "pacs-here" });
          const get = ceus.el("button", { type: "button", class: "pacs-retrieve", text: "Retrieve" });
          get.addEventListener("click", () => retrieve(node, m, get, here));
          body.append(ceus.el("tr", { "data-uid": m.study_uid },
            ceus.el("td", { text: showDate(m.date) }), ceus.el("td", { text: showTime(m.time) }),
            ceus.el("td", { text: m.description || "" }),
            ceus.el("td", { text: String(m.modalities || "").split("\\").join(", ") }),
            ceus.el("td", { text: m.accession || "" }),
            ceus.el("td", { class: "num", text: count(m.n_series) + " / " + count(m.n_instances) }),
            ceus.el("td", {}, get), here));
        }
        table.hidden = found.length === 0;
        ceus.status(status, found.length ? found.length + " stud" + (found.length > 1 ? "ies" : "y") + " on " + node
                                         : "no study on " + node + " matches");
      } catch (e) {
        table.hidden = true;
        ceus.status(status, "search failed: " + e.message, true);
      } finally {
        button.disabled = false;
      }
    });
  }

  // ------------------------------------------------------------------ study page: send results

  const sendButton = $("pacs-send-button");
  if (sendButton) {
    const status = $("pacs-send-status");
    const list = $("pacs-send-files");
    const studyId = JSON.parse($("study-data").textContent).id;

    sendButton.addEventListener("click", async () => {
      const node = $("pacs-send-node").value;
      list.replaceChildren();
      let analysis = null;
      try {
        analysis = (await ceus.api("GET", "/api/studies/" + studyId)).current_analysis;
      } catch (e) {
        ceus.status(status, e.message, true);
        return;
      }
      if (!analysis || analysis.status !== "done") {
        ceus.status(status, "there is no finished analysis to send yet", true);
        return;
      }
      const when = (analysis.finished || "").slice(0, 16).replace("T", " ");
      if (!window.confirm("Send the DICOM results (segmentation, SR, parametric maps) of the analysis of " +
                          when + " to the PACS node '" + node + "'? They are filed in the cine's study there.")) {
        return;
      }
      sendButton.disabled = true;
      ceus.status(status, "sending to " + node + " (writing the DICOM objects first if needed) ...");
      try {
        const out = await ceus.api("POST", "/api/analyses/" + analysis.id + "/send", { node });
        for (const f of out.files) {
          const line = f.name + (f.sop_class ? " (" + f.sop_class + ")" : "") + ": " + (f.ok ? "stored" : "failed") +
            (f.status !== null && f.status !== undefined ? " (status 0x" + Number(f.status).toString(16).padStart(4, "0") + ")" : "") +
            (f.message ? " " + f.message : "");
          list.append(ceus.el("li", { class: f.ok ? "pacs-ok" : "pacs-failed error", text: line }));
        }
        ceus.status(status, "sent to " + node + ": " + out.stored + " stored, " + out.failed + " failed", out.failed > 0);
      } catch (e) {
        ceus.status(status, "send failed: " + e.message, true);
      } finally {
        sendButton.disabled = false;
      }
    });
  }
})();
