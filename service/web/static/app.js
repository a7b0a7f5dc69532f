// parse: the try-it page. Plain JavaScript, no build step, no third-party code: hosts may be offline.
//
// Each chosen, dropped or pasted file becomes a card and is sent on its own, one after another,
// to POST v1/parse. One request per file keeps a bad file from failing the good ones, gives every
// card its own progress, and never floods the rate limit. The server answers with the lines and
// their quads in the image's own pixels; an SVG whose viewBox is those pixels lies over the image,
// so the boxes follow the displayed size without any resize code.
"use strict";

(() => {
  const API = "v1/parse"; // relative: the page also works behind a proxy under a sub-path
  const PALETTE = 6; // box colours c0..c5 in style.css, the same order as service/web/annotate.py
  const SVG_NS = "http://www.w3.org/2000/svg";
  const REQUEST_TIMEOUT_MS = 180000;

  const $ = (selector, root = document) => root.querySelector(selector);
  const els = {
    input: $("#file-input"),
    dropzone: $("#dropzone"),
    results: $("#results"),
    empty: $("#empty"),
    toolbar: $("#toolbar"),
    summary: $("#summary"),
    clear: $("#clear"),
    annotate: $("#opt-annotate"),
    structure: $("#opt-structure"),
    key: $("#opt-key"),
    template: $("#card-template"),
    modelInfo: $("#model-info"),
    announcer: $("#announcer"),
  };

  const jobs = []; // every card on the page, in order
  const queue = []; // jobs waiting to be sent
  let current = null; // the job whose request is in flight
  let cardSeq = 0;

  // ---- intake: chooser, drag-and-drop anywhere on the page, paste ----

  els.input.addEventListener("change", () => {
    addFiles(els.input.files);
    els.input.value = ""; // choosing the same file again must fire "change" again
  });

  // The whole drop zone opens the chooser, not only its button.
  els.dropzone.addEventListener("click", (event) => {
    if (event.target === els.dropzone || !event.target.closest("label, input, a, button")) {
      els.input.click();
    }
  });

  // dragenter/dragleave fire for every child crossed: count them to know when the drag left.
  let dragDepth = 0;
  const hasFiles = (event) => Array.from(event.dataTransfer?.types || []).includes("Files");
  document.addEventListener("dragenter", (event) => {
    if (!hasFiles(event)) return;
    dragDepth += 1;
    document.body.classList.add("dragging");
  });
  document.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (dragDepth === 0) document.body.classList.remove("dragging");
  });
  // Without preventDefault the browser would navigate away to the dropped file.
  document.addEventListener("dragover", (event) => {
    if (hasFiles(event)) event.preventDefault();
  });
  document.addEventListener("drop", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    dragDepth = 0;
    document.body.classList.remove("dragging");
    addFiles(event.dataTransfer.files);
  });

  document.addEventListener("paste", (event) => {
    if (event.target.closest?.("input, textarea")) return; // leave text fields their own paste
    const files = Array.from(event.clipboardData?.files || []);
    if (files.length) addFiles(files);
  });

  els.clear.addEventListener("click", clearAll);

  // Say which model answers before anything is sent; a worker still loading simply leaves the
  // footer as it is, and the first result fills it in.
  fetch("v1/models")
    .then((r) => (r.ok ? r.json() : null))
    .then((info) => info?.model && showModel(info.model, info.device))
    .catch(() => {});

  let modelDevice = ""; // from v1/models; parse results name the model but not the device
  function showModel(model, device) {
    if (device) modelDevice = device;
    const version = model.version ? ` ${model.version}` : "";
    els.modelInfo.textContent = `Model: ${model.name}${version}${modelDevice ? ` on ${modelDevice}` : ""}`;
  }

  function addFiles(fileList) {
    for (const file of Array.from(fileList)) {
      const job = createJob(file);
      jobs.push(job);
      queue.push(job);
    }
    els.empty.hidden = jobs.length > 0;
    els.toolbar.hidden = jobs.length === 0;
    updateSummary();
    pump();
  }

  // ---- requests, one at a time ----

  async function pump() {
    if (current) return;
    while (queue.length) {
      current = queue.shift();
      await send(current);
      current = null;
      updateSummary();
    }
  }

  function send(job) {
    return new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      job.xhr = xhr;
      job.state = "uploading";
      setStatus(job, "Uploading… 0%", 0);

      const form = new FormData();
      form.append("image", job.file, job.file.name || "pasted-image.png");
      // A browser shows no PDF (nor a TIFF) as an <img>: their pages come back drawn as PNGs.
      const query = new URLSearchParams();
      if (els.annotate.checked || isDocument(job.file)) query.set("annotate", "1");
      if (els.structure.checked) query.set("structure", "1");
      xhr.open("POST", API + (query.size ? `?${query}` : ""));
      const key = els.key.value.trim();
      if (key) xhr.setRequestHeader("Authorization", `Bearer ${key}`);
      xhr.timeout = REQUEST_TIMEOUT_MS;

      xhr.upload.addEventListener("progress", (event) => {
        if (!event.lengthComputable) return;
        const pct = Math.round((event.loaded / event.total) * 100);
        setStatus(job, `Uploading… ${pct}%`, event.loaded / event.total);
      });
      // Once the last byte is sent, the wait is the server reading the image.
      xhr.upload.addEventListener("load", () => {
        job.state = "parsing";
        setStatus(job, "Reading text…", null);
        announce(job, "uploaded, reading text");
      });

      const started = performance.now();
      const finish = (handler) => () => {
        job.xhr = null;
        if (!job.removed) handler(performance.now() - started);
        resolve();
      };
      xhr.addEventListener("load", finish((elapsed) => onResponse(job, xhr, elapsed)));
      xhr.addEventListener("error", finish(() => showError(job, networkError())));
      xhr.addEventListener("timeout", finish(() => showError(job, {
        title: "No answer from the server in time",
        detail: `Nothing came back within ${REQUEST_TIMEOUT_MS / 1000} s. Try again, or try a smaller image.`,
        retry: true,
      })));
      xhr.addEventListener("abort", finish(() => {}));
      xhr.send(form);
    });
  }

  function onResponse(job, xhr, elapsed) {
    let body = null;
    try {
      body = JSON.parse(xhr.responseText);
    } catch {
      // Not JSON: only a proxy in front of the service would answer like that.
    }
    if (xhr.status === 200 && body && Array.isArray(body.images) && body.images.length) {
      showResult(job, body, elapsed);
    } else {
      showError(job, describeError(xhr.status, body, xhr.getResponseHeader("Retry-After")));
    }
  }

  // ---- errors a person can act on ----

  function networkError() {
    return {
      title: "Couldn't reach the server",
      detail: "The connection failed before an answer came. Check that the service is running and your network is up, then try again.",
      retry: true,
    };
  }

  function describeError(status, body, retryAfterHeader) {
    const server = body?.error?.message || "";
    const retryAfter = parseInt(retryAfterHeader || "", 10);
    const wait = Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : 0;
    const waitText = wait ? `Try again in ${wait} second${wait === 1 ? "" : "s"}.` : "Try again shortly.";
    switch (status) {
      case 0:
        return networkError();
      case 400:
      case 422:
        return { title: "The server couldn't use this upload", detail: server || "The file may be damaged or empty." };
      case 401:
      case 403:
        return {
          title: "This server needs an API key",
          detail: `${server ? server + " " : ""}Enter your key under Options, then try again.`,
          retry: true,
        };
      case 413:
        return {
          title: "This file is too large",
          detail: server || "The upload is over the server's size limit. Scale the image down, split the PDF, or send fewer files at once.",
        };
      case 415:
        return {
          title: "This file isn't an image or PDF the service can read",
          detail: server || "Use PDF, JPEG, PNG, WebP, BMP, TIFF or GIF.",
        };
      case 429:
        return { title: "Too many requests", detail: `${waitText} The server limits how often one address may ask.`, retry: true, wait };
      case 502:
      case 503:
        return { title: "The service is busy", detail: `Every reader is occupied right now. ${waitText}`, retry: true, wait };
      case 504:
        return { title: "Reading this file took too long", detail: server || "The server gave up at its time limit. Try a smaller image or fewer pages.", retry: true };
      default:
        return {
          title: `The server answered with an error (${status})`,
          detail: server || "Please try again. If it keeps happening, tell the operator the time it happened.",
          retry: status >= 500,
        };
    }
  }

  function showError(job, { title, detail, retry = false, wait = 0 }) {
    job.state = "failed";
    const { card } = job;
    card.setAttribute("aria-busy", "false");
    card.classList.add("failed");
    $(".status", card).hidden = true;
    $(".badge", card).textContent = "Failed";
    const box = $(".error", card);
    $(".error-title", box).textContent = title;
    $(".error-detail", box).textContent = detail;
    const button = $(".retry", box);
    button.hidden = !retry;
    box.hidden = false;
    if (retry && wait) countdown(button, wait);
  }

  // A rate-limited or busy answer says when to come back: hold the button until then.
  function countdown(button, seconds) {
    let left = seconds;
    button.disabled = true;
    const tick = () => {
      if (left <= 0) {
        button.disabled = false;
        button.textContent = "Try again";
        return;
      }
      button.textContent = `Try again in ${left} s`;
      left -= 1;
      setTimeout(tick, 1000);
    };
    tick();
  }

  // ---- cards ----

  function createJob(file) {
    cardSeq += 1;
    const card = els.template.content.firstElementChild.cloneNode(true);
    card.id = `card-${cardSeq}`;
    const title = file.name || "Pasted image";
    $(".card-title", card).textContent = title;
    $(".card-title", card).title = title;
    $(".badge", card).textContent = formatBytes(file.size);
    const textarea = $(".fulltext", card);
    textarea.id = `text-${cardSeq}`;
    $(".text-label", card).htmlFor = textarea.id;
    els.results.append(card);

    const job = { file, card, state: "queued", url: URL.createObjectURL(file), xhr: null, removed: false };
    $(".retry", card).addEventListener("click", () => retry(job));
    $(".remove", card).addEventListener("click", () => removeJob(job));
    $(".copy", card).addEventListener("click", (event) => copyText(textarea, event.currentTarget));
    card.querySelectorAll(".download").forEach((button) =>
      button.addEventListener("click", () => download(job, button)));
    linkHighlights(card);
    return job;
  }

  function retry(job) {
    const { card } = job;
    card.classList.remove("failed");
    card.setAttribute("aria-busy", "true");
    $(".error", card).hidden = true;
    $(".status", card).hidden = false;
    $(".badge", card).textContent = formatBytes(job.file.size);
    job.state = "queued";
    setStatus(job, "Queued…", 0);
    queue.push(job);
    updateSummary();
    pump();
  }

  function setStatus(job, text, fraction) {
    const status = $(".status", job.card);
    $(".status-text", status).textContent = text;
    // null: the server is working and cannot say how far along; the bar sweeps instead.
    status.classList.toggle("indeterminate", fraction === null);
    const bar = $(".progress", status);
    if (fraction === null) bar.removeAttribute("aria-valuenow");
    else bar.setAttribute("aria-valuenow", String(Math.round(fraction * 100)));
    $(".progress-bar", status).style.width = fraction === null ? "" : `${Math.round(fraction * 100)}%`;
  }

  function announce(job, text) {
    els.announcer.textContent = `${job.file.name || "Pasted image"}: ${text}`;
  }

  function isDocument(file) {
    return /^(application\/pdf|image\/tiff)$/.test(file.type) || /\.(pdf|tiff?)$/i.test(file.name || "");
  }

  function showResult(job, body, elapsed) {
    job.state = "done";
    job.body = body;
    job.elapsed = elapsed;
    const { card } = job;
    card.setAttribute("aria-busy", "false");
    card.classList.add("done");
    $(".status", card).hidden = true;
    const total = body.images.reduce((n, image) => n + (image.lines || []).length, 0);
    const pages = body.images.length;
    $(".badge", card).textContent = `${total} line${total === 1 ? "" : "s"}` + (pages > 1 ? ` · ${pages} pages` : "");
    const pager = $(".pager", card);
    pager.hidden = pages < 2;
    if (!job.pagerBound) {
      job.pagerBound = true;
      $(".prev", card).addEventListener("click", () => showPage(job, job.index - 1));
      $(".next", card).addEventListener("click", () => showPage(job, job.index + 1));
    }
    showPage(job, 0);
    if (body.model) showModel(body.model);
    $(".card-body", card).hidden = false;
    announce(job, `${total} line${total === 1 ? "" : "s"} read` + (pages > 1 ? ` on ${pages} pages` : ""));
  }

  // One page of the answer on the card: its image and boxes, its lines, its text.
  function showPage(job, index) {
    const { card, body, elapsed } = job;
    const pages = body.images.length;
    job.index = Math.max(0, Math.min(pages - 1, index));
    const image = body.images[job.index];
    const lines = image.lines || [];
    $(".page-of", card).textContent = `Page ${job.index + 1} of ${pages}`;
    $(".prev", card).disabled = job.index === 0;
    $(".next", card).disabled = job.index === pages - 1;

    // Stage: the image at its own aspect ratio, the quads in its own pixel space on top.
    const stage = $(".stage", card);
    stage.style.aspectRatio = `${image.width} / ${image.height}`;
    // Tall pages are narrowed, not squashed: the height stays within 70% of the window.
    stage.style.maxWidth = `calc(70vh * ${image.width / image.height})`;
    const photo = $(".photo", card);
    photo.alt = `${job.file.name || "Pasted image"} with ${lines.length} text line${lines.length === 1 ? "" : "s"} outlined`;
    // Browsers cannot show some accepted formats (TIFF): the boxes then stand on a blank page.
    stage.classList.remove("no-preview");
    photo.addEventListener("error", () => stage.classList.add("no-preview"), { once: true });
    // The file itself where the browser can show it; a document's page as the server drew it.
    photo.src = isDocument(job.file) ? image.annotated_url || "" : job.url;
    if (!photo.getAttribute("src")) stage.classList.add("no-preview");
    const svg = $(".overlay", card);
    svg.setAttribute("viewBox", `0 0 ${image.width} ${image.height}`);
    // Regions (with structure) under the line boxes, one colour per type (style.css, .region.t-*).
    const regions = image.regions || [];
    svg.replaceChildren(...regions.map((region) => {
      const rect = document.createElementNS(SVG_NS, "polygon");
      rect.setAttribute("points", region.quad.map(([x, y]) => `${x},${y}`).join(" "));
      rect.setAttribute("class", `region t-${region.type}`);
      const title = document.createElementNS(SVG_NS, "title");
      title.textContent = region.level ? `${region.type} (level ${region.level})` : region.type;
      rect.append(title);
      return rect;
    }), ...lines.map((line, i) => {
      const poly = document.createElementNS(SVG_NS, "polygon");
      poly.setAttribute("points", line.quad.map(([x, y]) => `${x},${y}`).join(" "));
      poly.setAttribute("class", `box c${i % PALETTE}`);
      poly.dataset.i = String(i);
      return poly;
    }));
    $(".dims", card).textContent = `${image.width} × ${image.height} px` + (image.dpi ? ` at ${image.dpi} dpi` : "")
      + (image.source === "text-layer" ? " · text layer" : "");

    // Lines, each with its confidence.
    $(".count", card).textContent = `(${lines.length})`;
    const list = $(".lines", card);
    if (lines.length) {
      list.replaceChildren(...lines.map((line, i) => lineItem(line, i)));
    } else {
      const li = document.createElement("li");
      li.className = "none";
      li.textContent = pages > 1 ? "No text found on this page." : "No text found in this image.";
      list.replaceChildren(li);
    }

    $(".fulltext", card).value = image.text ?? lines.map((l) => l.text).join("\n");
    $(".fulltext", card).rows = Math.min(12, Math.max(3, lines.length + 1));

    showStructure(card, image);

    $(".downloads", card).hidden = false;
    const annotated = $(".annotated", card);
    annotated.hidden = !image.annotated_url;
    if (image.annotated_url) annotated.href = image.annotated_url;

    const t = body.timing_ms || {};
    $(".timing", card).replaceChildren(
      ...timingItem("Decode", t.decode),
      ...timingItem("Detect", t.detect),
      ...timingItem("Recognize", t.recognize),
      ...timingItem("Structure", t.structure),
      ...timingItem("Server total", t.total),
      ...timingItem("Round trip", elapsed),
    );
  }

  // The page's region types as a legend, and each table drawn as a table, built from its cells
  // with textContent (the server's HTML is never put into the page as markup).
  function showStructure(card, image) {
    const box = $(".structure", card);
    const regions = image.regions || [];
    box.hidden = !regions.length;
    const types = [...new Set(regions.map((r) => r.type))];
    $(".legend", box).replaceChildren(...types.map((type) => {
      const li = document.createElement("li");
      li.className = `t-${type}`;
      li.textContent = `${type} (${regions.filter((r) => r.type === type).length})`;
      return li;
    }));
    $(".tables", box).replaceChildren(...(image.tables || []).map((table) => {
      const el = document.createElement("table");
      el.className = "cells";
      const rows = [];
      for (const cell of [...table.cells].sort((a, b) => a.row - b.row || a.col - b.col)) {
        while (rows.length <= cell.row) rows.push(el.insertRow());
        const td = rows[cell.row].insertCell();
        td.textContent = cell.text;
        if (cell.rowspan > 1) td.rowSpan = cell.rowspan;
        if (cell.colspan > 1) td.colSpan = cell.colspan;
      }
      return el;
    }));
  }

  function lineItem(line, i) {
    const li = document.createElement("li");
    li.className = `line c${i % PALETTE}`;
    li.tabIndex = 0; // keyboard users reach each line, and focusing it highlights its box
    li.dataset.i = String(i);
    const conf = Math.max(0, Math.min(1, Number(line.confidence) || 0));
    if (conf < 0.6) li.classList.add("low");

    const idx = document.createElement("span");
    idx.className = "idx";
    idx.textContent = String(i + 1);
    const text = document.createElement("span");
    text.className = "ltext";
    text.textContent = line.text || "\u00a0";
    const meter = document.createElement("span");
    meter.className = "conf";
    meter.title = `Confidence ${(conf * 100).toFixed(1)}%`;
    const bar = document.createElement("span");
    bar.className = "conf-bar";
    const fill = document.createElement("span");
    fill.style.width = `${conf * 100}%`;
    bar.append(fill);
    const pct = document.createElement("span");
    pct.className = "conf-num";
    pct.textContent = `${Math.round(conf * 100)}%`;
    meter.append(bar, pct);
    li.append(idx, text, meter);
    li.setAttribute("aria-label", `Line ${i + 1}: ${line.text}. Confidence ${Math.round(conf * 100)} percent.`);
    return li;
  }

  // One chip per stage: a <div> groups each dt/dd pair so a pair never wraps apart.
  function timingItem(label, ms) {
    if (typeof ms !== "number") return [];
    const pair = document.createElement("div");
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.textContent = ms < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`;
    pair.append(dt, dd);
    return [pair];
  }

  // ---- a line and its box light up together ----

  function linkHighlights(card) {
    const list = $(".lines", card);
    const svg = $(".overlay", card);
    let active = null;
    const activate = (i) => {
      if (active === i) return;
      card.querySelectorAll(".active").forEach((el) => el.classList.remove("active"));
      active = i;
      card.classList.toggle("has-active", i !== null);
      if (i === null) return;
      card.querySelectorAll(`[data-i="${i}"]`).forEach((el) => el.classList.add("active"));
    };
    const indexOf = (event) => event.target.closest?.("[data-i]")?.dataset.i ?? null;

    list.addEventListener("pointerover", (event) => activate(indexOf(event)));
    list.addEventListener("pointerleave", () => activate(null));
    list.addEventListener("focusin", (event) => activate(indexOf(event)));
    list.addEventListener("focusout", () => activate(null));

    svg.addEventListener("pointerover", (event) => {
      const i = indexOf(event);
      activate(i);
      if (i !== null) scrollIntoList(list, list.querySelector(`[data-i="${i}"]`));
    });
    svg.addEventListener("pointerleave", () => activate(null));
    svg.addEventListener("click", (event) => {
      const i = indexOf(event);
      if (i !== null) list.querySelector(`[data-i="${i}"]`)?.focus();
    });
  }

  // Bring a line into view inside its own scrolling list, without scrolling the page.
  function scrollIntoList(list, item) {
    if (!item) return;
    const top = item.offsetTop;
    const bottom = top + item.offsetHeight;
    if (top < list.scrollTop) list.scrollTop = top;
    else if (bottom > list.scrollTop + list.clientHeight) list.scrollTop = bottom - list.clientHeight;
  }

  // ---- downloads: the same file read again into a document (the server keeps no result) ----
  async function download(job, button) {
    const label = button.textContent;
    button.disabled = true;
    button.textContent = "Preparing…";
    try {
      const form = new FormData();
      form.append("image", job.file, job.file.name || "pasted-image.png");
      const headers = {};
      const key = els.key.value.trim();
      if (key) headers.Authorization = `Bearer ${key}`;
      const response = await fetch(`${API}?format=${button.dataset.format}${els.structure.checked ? "&structure=1" : ""}`, { method: "POST", body: form, headers });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const blob = await response.blob();
      if (button.dataset.href) URL.revokeObjectURL(button.dataset.href);
      button.dataset.href = URL.createObjectURL(blob);
      button.dataset.type = blob.type;
      const link = document.createElement("a");
      link.href = button.dataset.href;
      link.download = `${(job.file.name || "pasted-image").replace(/\.[^.]*$/, "")}.${button.dataset.ext}`;
      document.body.append(link);
      link.click();
      link.remove();
      button.textContent = label;
    } catch (err) {
      button.textContent = `${label}: failed (${err.message})`;
    } finally {
      button.disabled = false;
    }
  }

  // ---- copy, summary, clear ----

  async function copyText(textarea, button) {
    let ok = true;
    try {
      await navigator.clipboard.writeText(textarea.value);
    } catch {
      // The async clipboard needs a secure context (https or localhost); plain http falls back.
      textarea.select();
      ok = document.execCommand("copy");
    }
    button.textContent = ok ? "Copied ✓" : "Select and copy";
    button.classList.toggle("copied", ok);
    setTimeout(() => {
      button.textContent = "Copy text";
      button.classList.remove("copied");
    }, 1600);
  }

  function updateSummary() {
    const count = (state) => jobs.filter((j) => j.state === state).length;
    const done = count("done");
    const failed = count("failed");
    const pending = jobs.length - done - failed;
    const parts = [`${jobs.length} file${jobs.length === 1 ? "" : "s"}`];
    if (done) parts.push(`${done} read`);
    if (failed) parts.push(`${failed} failed`);
    if (pending) parts.push(`${pending} in progress`);
    els.summary.textContent = parts.join(" · ");
  }

  function removeJob(job) {
    job.removed = true;
    job.xhr?.abort();
    URL.revokeObjectURL(job.url);
    job.card.remove();
    jobs.splice(jobs.indexOf(job), 1);
    const queued = queue.indexOf(job);
    if (queued >= 0) queue.splice(queued, 1);
    els.empty.hidden = jobs.length > 0;
    els.toolbar.hidden = jobs.length === 0;
    updateSummary();
    // Keyboard users would otherwise be left on a removed button: go back to the chooser.
    if (!document.activeElement || document.activeElement === document.body) els.input.focus();
  }

  function clearAll() {
    for (const job of [...jobs]) removeJob(job);
    els.input.focus();
  }

  function formatBytes(n) {
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
    return `${(n / 1024 / 1024).toFixed(1)} MB`;
  }
})();
