// The studies page: upload a cine, load the demo study, open a file from the data directory.
"use strict";

(function () {
  const status = document.getElementById("new-study-status");
  const bar = document.getElementById("upload-progress");

  function open(study) { window.location.href = "/studies/" + study.id; }

  document.getElementById("upload-file").addEventListener("change", (ev) => {
    const file = ev.target.files[0];
    if (!file) return;
    // XHR rather than fetch: it reports upload progress for large cines.
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/studies");
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.setRequestHeader("X-Filename", encodeURIComponent(file.name));
    bar.hidden = false;
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = e.loaded / e.total; };
    xhr.onload = () => {
      let data = null;
      try { data = JSON.parse(xhr.responseText); } catch (e) { data = null; }
      if (xhr.status === 201) { ceus.status(status, "reading the cine ... done"); open(data); return; }
      bar.hidden = true;
      ceus.status(status, "Upload refused: " + ceus.message(data, { status: xhr.status, statusText: xhr.statusText }), true);
    };
    xhr.onerror = () => { bar.hidden = true; ceus.status(status, "Upload failed: the server did not answer", true); };
    ceus.status(status, "uploading and reading the cine ...");
    xhr.send(file);
  });

  document.getElementById("load-demo").addEventListener("click", async (ev) => {
    ev.target.disabled = true;
    ceus.status(status, "simulating the demo study ...");
    try {
      const withRois = document.getElementById("demo-with-rois").checked;
      // The server returns the existing demo study of this variant rather than a second copy.
      open(await ceus.api("POST", "/api/studies/demo", { seed: 0, with_rois: withRois }));
    } catch (e) {
      ceus.status(status, e.message, true);
      ev.target.disabled = false;
    }
  });

  // Deleting removes the study's files and analyses from disk and database: ask first.
  for (const b of document.querySelectorAll("button.delete-study")) {
    b.addEventListener("click", async () => {
      if (!window.confirm("Delete the study '" + b.dataset.name + "' with its cine, ROIs, case and every " +
                          "analysis? This cannot be undone.")) return;
      try { await ceus.api("DELETE", "/api/studies/" + b.dataset.id); b.closest("tr").remove(); }
      catch (e) { ceus.status(status, e.message, true); }
    });
  }

  for (const b of document.querySelectorAll("button.import")) {
    b.addEventListener("click", async () => {
      ceus.status(status, "reading the cine ...");
      try { open(await ceus.api("POST", "/api/studies/import", { name: b.dataset.name })); }
      catch (e) { ceus.status(status, e.message, true); }
    });
  }
})();
