// Cine player: fetches one frame at a time as PNG (contrast and B-mode panels),
// plays at the cine's own frame times and tells listeners which frame is shown.
"use strict";

class Player {
  constructor(studyId, info, els) {
    this.studyId = studyId;
    this.times = info.times_s;
    this.hasBmode = !!info.panels.bmode;
    this.els = els;            // {slider, play, label}
    this.index = 0;
    this.playing = false;
    this.listeners = [];
    this.pending = null;       // frame index whose images are loading
    this.wanted = 0;           // last frame asked for (scrubbing skips frames in between)
    els.slider.max = String(this.times.length - 1);
    els.slider.addEventListener("input", () => { this.pause(); this.show(Number(els.slider.value)); });
    els.play.addEventListener("click", () => (this.playing ? this.pause() : this.play()));
  }

  onFrame(fn) { this.listeners.push(fn); }

  url(index, panel) {
    return "/api/studies/" + this.studyId + "/frames/" + index + ".png?panel=" + panel;
  }

  load(src) {
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error("frame not available"));
      img.src = src;
    });
  }

  // Show a frame; while one is loading, only the latest request is kept.
  async show(index) {
    this.wanted = index;
    if (this.pending !== null) return;
    this.pending = index;
    try {
      const [contrast, bmode] = await Promise.all([
        this.load(this.url(index, "contrast")),
        this.hasBmode ? this.load(this.url(index, "bmode")) : Promise.resolve(null),
      ]);
      this.index = index;
      this.els.slider.value = String(index);
      this.els.label.textContent = "frame " + index + " / " + (this.times.length - 1) +
        ", t = " + this.times[index].toFixed(2) + " s";
      for (const fn of this.listeners) fn(index, this.times[index], contrast, bmode);
    } finally {
      this.pending = null;
    }
    if (this.wanted !== index) this.show(this.wanted);
  }

  play() {
    if (this.index >= this.times.length - 1) this.index = 0;
    this.playing = true;
    this.els.play.textContent = "Pause";
    const step = async () => {
      if (!this.playing) return;
      const started = performance.now();
      const next = this.index + 1;
      if (next >= this.times.length) { this.pause(); return; }
      await this.show(next);
      // Real time: wait for the rest of the frame interval after loading the frame.
      const dtMs = 1000 * (this.times[next] - this.times[next - 1]);
      setTimeout(step, Math.max(0, dtMs - (performance.now() - started)));
    };
    step();
  }

  pause() {
    this.playing = false;
    this.els.play.textContent = "Play";
  }
}
