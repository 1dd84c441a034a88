// Small helpers shared by the pages: calls to the app's own JSON API.
"use strict";

const ceus = {
  // Text for plotly labels: plotly renders a subset of HTML (<a href>, <b>, <br>) in
  // legends and titles, so ROI names are entity-escaped before they reach it.
  plotText(text) {
    return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  },

  // Call the API; resolves to the parsed JSON, rejects with the server's one-line message.
  async api(method, url, body, headers) {
    const opts = { method, headers: Object.assign({}, headers || {}) };
    if (body !== undefined) {
      if (body instanceof Blob) {
        opts.body = body;
      } else {
        opts.body = JSON.stringify(body);
        opts.headers["Content-Type"] = "application/json";
      }
    }
    const resp = await fetch(url, opts);
    const text = await resp.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    if (!resp.ok) {
      const err = new Error(ceus.message(data, resp));
      err.status = resp.status;
      err.data = data;
      throw err;
    }
    return data;
  },

  // The readable part of an error response (FastAPI's detail may be a list for 422s).
  message(data, resp) {
    if (data && typeof data.detail === "string") return data.detail;
    if (data && Array.isArray(data.detail)) {
      return data.detail.map((d) => (d.loc ? d.loc.join(".") + ": " : "") + d.msg).join("; ");
    }
    return "request failed (" + resp.status + " " + resp.statusText + ")";
  },

  el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c);
    return node;
  },

  fmt(v, digits) {
    if (v === null || v === undefined) return "n/a";
    if (typeof v === "boolean") return v ? "yes" : "no";
    if (typeof v !== "number") return String(v);
    if (v !== 0 && (Math.abs(v) >= 1e4 || Math.abs(v) < 1e-3)) return v.toExponential(digits || 3);
    return Number(v.toPrecision(digits || 4)).toString();
  },

  status(node, text, isError) {
    node.textContent = text;
    node.classList.toggle("error", !!isError);
  },
};
