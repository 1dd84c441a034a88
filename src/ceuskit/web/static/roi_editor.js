// Canvas ROI editor for the contrast panel.
//
// Coordinates: ROIs are kept in panel pixels (x = column, y = row), the
// contract's "panel" space, where pixel (r, c) has its centre at (x = c, y = r).
// The canvas shows each panel pixel as a zoom x zoom square, so a canvas point
// (cx, cy) is the panel point (cx / zoom - 0.5, cy / zoom - 0.5).
"use strict";

const ROLE_COLOURS = { lesion: "#ff4d4d", reference: "#3fa9f5", vessel: "#f5d33f", other: "#b07cff" };
const HANDLE_PX = 7;   // canvas pixels within which a click grabs a vertex or handle

class RoiEditor {
  constructor(canvas, panelShape, rois, onChange) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    [this.rows, this.cols] = panelShape;
    // Large enough to draw on, never wider than about 560 canvas pixels.
    this.zoom = Math.min(3, 560 / this.cols);
    canvas.width = Math.round(this.cols * this.zoom);
    canvas.height = Math.round(this.rows * this.zoom);
    canvas.dataset.zoom = String(this.zoom);
    this.rois = (rois || []).map((r) => JSON.parse(JSON.stringify(r)));
    this.onChange = onChange;
    this.tool = "edit";
    this.selected = -1;
    this.draft = null;         // polygon vertices being drawn, or the ellipse being dragged
    this.drag = null;          // {roi, what, start, orig}
    this.background = null;
    this.newRole = "lesion";
    canvas.addEventListener("mousedown", (e) => this.down(e));
    canvas.addEventListener("mousemove", (e) => this.move(e));
    window.addEventListener("mouseup", (e) => this.up(e));
    canvas.addEventListener("keydown", (e) => this.key(e));
  }

  // ---------------------------------------------------------------- geometry

  toPanel(e) {
    const rect = this.canvas.getBoundingClientRect();
    const sx = this.canvas.width / rect.width, sy = this.canvas.height / rect.height;
    const x = ((e.clientX - rect.left) * sx) / this.zoom - 0.5;
    const y = ((e.clientY - rect.top) * sy) / this.zoom - 0.5;
    // ROIs must stay inside the panel (the pipeline refuses anything outside).
    return [this.clamp(x, this.cols), this.clamp(y, this.rows)];
  }

  clamp(v, n) { return Math.round(Math.min(n - 0.5, Math.max(-0.5, v)) * 10) / 10; }

  toCanvas([x, y]) { return [(x + 0.5) * this.zoom, (y + 0.5) * this.zoom]; }

  near(a, b) {
    const [ax, ay] = this.toCanvas(a), [bx, by] = this.toCanvas(b);
    return Math.hypot(ax - bx, ay - by) <= HANDLE_PX;
  }

  handles(roi) {
    if (roi.polygon) return roi.polygon.map((p, i) => ({ what: i, at: p }));
    const [cx, cy, rx, ry] = roi.ellipse;
    return [{ what: "rx", at: [cx + rx, cy] }, { what: "ry", at: [cx, cy + ry] }, { what: "centre", at: [cx, cy] }];
  }

  inside(roi, [x, y]) {
    if (roi.ellipse) {
      const [cx, cy, rx, ry] = roi.ellipse;
      return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1;
    }
    let hit = false;
    const p = roi.polygon;
    for (let i = 0, j = p.length - 1; i < p.length; j = i++) {
      if ((p[i][1] > y) !== (p[j][1] > y) &&
          x < ((p[j][0] - p[i][0]) * (y - p[i][1])) / (p[j][1] - p[i][1]) + p[i][0]) hit = !hit;
    }
    return hit;
  }

  uniqueName(base) {
    const names = new Set(this.rois.map((r) => r.name));
    if (!names.has(base)) return base;
    for (let i = 2; ; i++) if (!names.has(base + "-" + i)) return base + "-" + i;
  }

  // ---------------------------------------------------------------- mouse

  setTool(tool) {
    this.tool = tool;
    this.draft = null;
    this.redraw();
  }

  down(e) {
    if (e.button !== 0) return;
    this.canvas.focus();
    const p = this.toPanel(e);
    if (this.tool === "polygon") {
      if (!this.draft) this.draft = { polygon: [] };
      const pts = this.draft.polygon;
      // Clicking the first vertex again closes the polygon.
      if (pts.length >= 3 && this.near(p, pts[0])) { this.finishPolygon(); return; }
      pts.push(p);
      this.redraw();
      return;
    }
    if (this.tool === "ellipse") {
      this.draft = { ellipse: [p[0], p[1], 0, 0], start: p };
      return;
    }
    // Edit: a handle of the selected ROI first, then any ROI under the pointer.
    const order = this.selected >= 0 ? [this.selected, ...this.rois.keys()] : [...this.rois.keys()];
    for (const i of order) {
      for (const h of this.handles(this.rois[i])) {
        if (this.near(p, h.at)) {
          this.select(i);
          this.drag = { roi: i, what: h.what, start: p, orig: JSON.parse(JSON.stringify(this.rois[i])) };
          return;
        }
      }
    }
    const hit = this.rois.findIndex((r) => this.inside(r, p));
    this.select(hit);
    if (hit >= 0) this.drag = { roi: hit, what: "move", start: p, orig: JSON.parse(JSON.stringify(this.rois[hit])) };
  }

  move(e) {
    const p = this.toPanel(e);
    if (this.draft && this.draft.start) {
      const [sx, sy] = this.draft.start;
      this.draft.ellipse = [sx, sy, Math.abs(p[0] - sx), Math.abs(p[1] - sy)];
      this.redraw();
      return;
    }
    if (!this.drag) return;
    const roi = this.rois[this.drag.roi], o = this.drag.orig;
    const dx = p[0] - this.drag.start[0], dy = p[1] - this.drag.start[1];
    if (this.drag.what === "move" || this.drag.what === "centre") {
      if (o.polygon) roi.polygon = o.polygon.map(([x, y]) => [this.clamp(x + dx, this.cols), this.clamp(y + dy, this.rows)]);
      else roi.ellipse = [o.ellipse[0] + dx, o.ellipse[1] + dy, o.ellipse[2], o.ellipse[3]];
    } else if (this.drag.what === "rx") {
      roi.ellipse[2] = Math.max(1, Math.abs(p[0] - o.ellipse[0]));
    } else if (this.drag.what === "ry") {
      roi.ellipse[3] = Math.max(1, Math.abs(p[1] - o.ellipse[1]));
    } else {
      roi.polygon[this.drag.what] = p;
    }
    this.redraw();
  }

  up() {
    if (this.draft && this.draft.start) {
      const [cx, cy, rx, ry] = this.draft.ellipse;
      this.draft = null;
      if (rx >= 1 && ry >= 1) this.add({ ellipse: [cx, cy, rx, ry] });
      else this.redraw();
      return;
    }
    if (this.drag) {
      this.drag = null;
      this.changed();
    }
  }

  key(e) {
    if (e.key === "Enter" && this.draft && this.draft.polygon) this.finishPolygon();
    if (e.key === "Escape") { this.draft = null; this.redraw(); }
    if ((e.key === "Delete" || e.key === "Backspace") && this.selected >= 0 && !this.draft) this.remove(this.selected);
  }

  finishPolygon() {
    const pts = this.draft ? this.draft.polygon : [];
    this.draft = null;
    if (pts.length >= 3) this.add({ polygon: pts });
    else this.redraw();
  }

  // ---------------------------------------------------------------- ROI list

  add(shape) {
    const roi = Object.assign({ name: this.uniqueName(this.newRole), role: this.newRole }, shape);
    this.rois.push(roi);
    this.select(this.rois.length - 1);
    this.changed();
  }

  remove(i) {
    this.rois.splice(i, 1);
    this.selected = -1;
    this.changed();
  }

  rename(i, name) { this.rois[i].name = name; this.changed(); }

  setRole(i, role) { this.rois[i].role = role; this.changed(); }

  select(i) { this.selected = i; this.redraw(); }

  replace(rois) { this.rois = rois.map((r) => JSON.parse(JSON.stringify(r))); this.selected = -1; this.redraw(); }

  changed() { this.redraw(); if (this.onChange) this.onChange(this.rois); }

  // ---------------------------------------------------------------- drawing

  setBackground(img) { this.background = img; this.redraw(); }

  path(ctx, roi, zoom) {
    ctx.beginPath();
    if (roi.ellipse) {
      const [cx, cy, rx, ry] = roi.ellipse;
      ctx.ellipse((cx + 0.5) * zoom, (cy + 0.5) * zoom, rx * zoom, ry * zoom, 0, 0, 2 * Math.PI);
    } else {
      roi.polygon.forEach(([x, y], k) => (k ? ctx.lineTo : ctx.moveTo).call(ctx, (x + 0.5) * zoom, (y + 0.5) * zoom));
      ctx.closePath();
    }
  }

  // The ROI's name on a dark plate (speckle behind coloured text is unreadable), centred
  // above the outline, or below it when there is no room, and kept inside the canvas.
  labelBox(ctx, roi, zoom) {
    const [x0, y0, x1, y1] = this.bounds(roi).map((v) => (v + 0.5) * zoom);
    ctx.font = "bold 13px sans-serif";
    const w = ctx.measureText(roi.name).width + 8, h = 18;
    const cw = ctx.canvas.width, ch = ctx.canvas.height;
    let top = y0 - h - 3;
    if (top < 0) top = Math.min(y1 + 3, ch - h);
    return { left: Math.max(0, Math.min((x0 + x1) / 2 - w / 2, cw - w)), top: Math.max(0, top), w, h };
  }

  label(ctx, roi, zoom, colour) {
    const { left, top, w, h } = this.labelBox(ctx, roi, zoom);
    ctx.textBaseline = "middle";
    ctx.fillStyle = "rgba(0, 0, 0, 0.72)";
    ctx.fillRect(left, top, w, h);
    ctx.fillStyle = colour;
    ctx.fillText(roi.name, left + 4, top + h / 2 + 0.5);
    ctx.textBaseline = "alphabetic";
  }

  // Panel-pixel bounding box [x0, y0, x1, y1] of an ROI.
  bounds(roi) {
    if (roi.ellipse) {
      const [cx, cy, rx, ry] = roi.ellipse;
      return [cx - rx, cy - ry, cx + rx, cy + ry];
    }
    const xs = roi.polygon.map((p) => p[0]), ys = roi.polygon.map((p) => p[1]);
    return [Math.min(...xs), Math.min(...ys), Math.max(...xs), Math.max(...ys)];
  }

  // Outlines and names on any context (the B-mode canvas uses this too).
  drawOutlines(ctx, zoom, withHandles) {
    ctx.lineWidth = 2;
    ctx.font = "12px sans-serif";
    this.rois.forEach((roi, i) => {
      const colour = ROLE_COLOURS[roi.role] || "#fff";
      ctx.strokeStyle = colour;
      ctx.setLineDash(i === this.selected ? [6, 3] : []);
      this.path(ctx, roi, zoom);
      ctx.stroke();
      ctx.setLineDash([]);
      this.label(ctx, roi, zoom, colour);
      ctx.fillStyle = colour;
      if (withHandles && i === this.selected) {
        for (const h of this.handles(roi)) {
          ctx.fillRect((h.at[0] + 0.5) * zoom - 3, (h.at[1] + 0.5) * zoom - 3, 6, 6);
        }
      }
    });
  }

  redraw() {
    const ctx = this.ctx;
    ctx.imageSmoothingEnabled = false;
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    if (this.background) ctx.drawImage(this.background, 0, 0, this.canvas.width, this.canvas.height);
    this.drawOutlines(ctx, this.zoom, true);
    if (this.draft) {
      const colour = ROLE_COLOURS[this.newRole] || "#fff";
      ctx.strokeStyle = colour;
      ctx.fillStyle = colour;
      if (this.draft.polygon) {
        const pts = this.draft.polygon;
        ctx.beginPath();
        pts.forEach(([x, y], k) => (k ? ctx.lineTo : ctx.moveTo).call(ctx, (x + 0.5) * this.zoom, (y + 0.5) * this.zoom));
        ctx.stroke();
        for (const [x, y] of pts) ctx.fillRect((x + 0.5) * this.zoom - 2, (y + 0.5) * this.zoom - 2, 4, 4);
      } else if (this.draft.ellipse) {
        this.path(ctx, this.draft, this.zoom);
        ctx.stroke();
      }
    }
  }
}
