// The playground: builds a generation request from the form, shows its price (the server's
// quote), gets a website token and calls the normal API with it. Prices are never computed
// here: they come from GET /v1/models/{id}/quote, the pricing code the API charges with.
//
// A signed-in account runs every generation as a job (`Prefer: respond-async`, docs/jobs.md):
// the 202 names the job, its id goes into the address (`?job=`) and localStorage, and the
// page polls GET /v1/jobs/{id}, so a reload or a visit later picks the job up again and
// shows its result; Cancel is POST /v1/jobs/{id}/cancel. Images take this path too, not
// only videos: since a hang-up no longer cancels a generation whose credit is held (it
// runs on as a job), aborting a synchronous request could not keep Cancel's promise.
// Guests cannot have jobs (400 `jobs_need_account`: they share one account), so they
// wait on the synchronous request, and the page says so for videos.
(() => {
  "use strict";

  const data = JSON.parse(document.getElementById("pg-data").textContent);
  const form = document.getElementById("pg-form");
  if (!form) return; // no model on this server
  const $ = (id) => document.getElementById(id);
  const el = {
    model: $("pg-model"), prompt: $("pg-prompt"), size: $("pg-size"), quality: $("pg-quality"),
    format: $("pg-format"), n: $("pg-n"), seconds: $("pg-seconds"), images: $("pg-images"),
    mask: $("pg-mask"), imageList: $("pg-image-list"), drop: $("pg-drop"),
    estimate: $("pg-estimate"), human: $("pg-human"), submit: $("pg-submit"), cancel: $("pg-cancel"),
    elapsed: $("pg-elapsed"), status: $("pg-status"), error: $("pg-error"), result: $("pg-result"),
    code: $("pg-code"), gallery: $("pg-gallery"), freeLeft: $("pg-free-left"),
  };
  const models = new Map(data.models.map((m) => [m.id, m]));
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const RECENT_KEY = "image-router.playground.recent";
  const JOB_KEY = "image-router.playground.job"; // the running job of this browser
  const FINAL = new Set(["succeeded", "failed", "cancelled"]);
  const useJobs = data.signed_in;
  const state = { files: [], running: null, solved: null, quoteTimer: 0, token: null };

  const current = () => models.get(el.model.value);
  const show = (id, visible) => { $(id).hidden = !visible; };
  // A USD amount (the server's "0.0800" string, or the `cost` number) as "$0.08".
  function usd(value) {
    const text = typeof value === "number" ? value.toFixed(4) : String(value);
    const [whole, frac = ""] = text.split(".");
    const digits = frac.replace(/0+$/, "");
    return digits === "" ? `$${whole}` : `$${whole}.${digits.padEnd(2, "0")}`;
  }
  function setOptions(select, values, keep, label) {
    const previous = keep ? select.value : null;
    select.replaceChildren(...values.map((v) => new Option(label ? label(v) : String(v), String(v))));
    if (previous !== null && values.map(String).includes(previous)) select.value = previous;
  }

  // ---------------------------------------------------------------- the form follows the model
  function applyModel() {
    const m = current();
    const video = m.modality === "video";
    setOptions(el.size, m.sizes, true);
    show("pg-quality-field", m.qualities.length > 0);
    setOptions(el.quality, m.qualities, true);
    show("pg-format-field", !video);
    show("pg-n-field", !video && m.max_n > 1);
    el.n.max = String(m.max_n);
    if (Number(el.n.value) > m.max_n) el.n.value = String(m.max_n);
    show("pg-seconds-field", video && m.seconds.length > 0);
    setOptions(el.seconds, m.seconds, true, (s) => `${s} s`);
    if (m.default_seconds != null && !m.seconds.map(String).includes(el.seconds.value)) {
      el.seconds.value = String(m.default_seconds);
    }
    show("pg-images-field", m.max_images > 0);
    $("pg-images-legend").textContent = video
      ? "Start image"
      : `Input images (up to ${m.max_images})`;
    el.images.multiple = m.max_images > 1;
    show("pg-mask-field", !video && m.mask);
    if ($("pg-guest-video")) show("pg-guest-video", video);
    state.files = state.files.slice(0, m.max_images);
    if (!m.mask) el.mask.value = "";
    drawFiles();
    const url = new URL(location.href);
    url.searchParams.set("model", m.id);
    history.replaceState(null, "", url);
    requestQuote();
  }

  // ---------------------------------------------------------------- input images
  function addFiles(list) {
    const m = current();
    const images = [...list].filter((f) => f.type.startsWith("image/"));
    const room = m.max_images - state.files.length;
    state.files.push(...images.slice(0, Math.max(0, room)));
    if (images.length > room) {
      announce(`This model takes at most ${m.max_images} input image${m.max_images > 1 ? "s" : ""}; the rest were left out.`);
    }
    drawFiles();
    requestQuote();
  }

  function drawFiles() {
    el.imageList.replaceChildren(...state.files.map((file, i) => {
      const item = document.createElement("li");
      const img = document.createElement("img");
      img.src = URL.createObjectURL(file);
      img.alt = "";
      const name = document.createElement("span");
      name.textContent = file.name;
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "small secondary";
      remove.textContent = "Remove";
      remove.setAttribute("aria-label", `Remove ${file.name}`);
      remove.addEventListener("click", () => {
        state.files.splice(i, 1);
        drawFiles();
        requestQuote();
        el.images.focus();
      });
      item.append(img, name, remove);
      return item;
    }));
  }

  el.images.addEventListener("change", () => { addFiles(el.images.files); el.images.value = ""; });
  for (const type of ["dragenter", "dragover"]) {
    el.drop.addEventListener(type, (event) => { event.preventDefault(); el.drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    el.drop.addEventListener(type, () => el.drop.classList.remove("over"));
  }
  el.drop.addEventListener("drop", (event) => {
    event.preventDefault();
    if (event.dataTransfer) addFiles(event.dataTransfer.files);
  });

  // ---------------------------------------------------------------- the price, from the server
  function fields() {
    const m = current();
    const out = { model: m.id, prompt: el.prompt.value };
    if (el.size.value) out.size = el.size.value;
    if (m.qualities.length) out.quality = el.quality.value;
    if (m.modality === "image") {
      out.output_format = el.format.value;
      if (m.max_n > 1) out.n = Math.max(1, Math.min(m.max_n, Number(el.n.value) || 1));
      out.response_format = "url";
    } else if (m.seconds.length) {
      out.seconds = Number(el.seconds.value);
    }
    return out;
  }

  function requestQuote() {
    clearTimeout(state.quoteTimer);
    state.quoteTimer = setTimeout(quote, 200);
  }

  async function quote() {
    const f = fields();
    const query = new URLSearchParams();
    for (const name of ["size", "quality", "n", "seconds"]) if (f[name] != null) query.set(name, f[name]);
    query.set("images", String(state.files.length));
    const path = f.model.split("/").map(encodeURIComponent).join("/");
    try {
      const response = await fetch(`/v1/models/${path}/quote?${query}`, { headers: { Accept: "application/json" } });
      const body = await response.json();
      if (f.model !== el.model.value) return; // the model changed meanwhile
      if (!response.ok) {
        el.estimate.textContent = `Estimated cost: not available (${errorText(body)})`;
        return;
      }
      const price = body.usd;
      const exact = body.exact;
      el.estimate.textContent = Number(price) === 0
        ? "Estimated cost: free"
        : `Estimated cost: ${exact ? "" : "at most "}${usd(price)}`;
    } catch (error) {
      el.estimate.textContent = "Estimated cost: not available right now";
    }
  }

  // ---------------------------------------------------------------- website token + human check
  async function challengeSolution(signal) {
    const response = await fetch("/v1/web-token/challenge", { headers: { Accept: "application/json" }, signal });
    const challenge = await response.json();
    if (!challenge.required) return null;
    el.human.hidden = false;
    el.human.textContent = "Checking that you are a person (a moment of work for your browser)…";
    try {
      return await window.altchaSolve(challenge, signal);
    } finally {
      el.human.textContent = "";
      el.human.hidden = true;
    }
  }

  // Solve the next check ahead of time, while the person types.
  function presolve() {
    if (!data.human_check) return;
    state.solved = challengeSolution().catch(() => null);
  }

  async function mint(payload, signal) {
    const headers = { Accept: "application/json", "Content-Type": "application/json" };
    if (data.signed_in) headers["X-CSRF-Token"] = csrf;
    return fetch("/v1/web-token", {
      method: "POST", headers, signal, body: JSON.stringify(payload ? { altcha: payload } : {}),
    });
  }

  async function websiteToken(signal) {
    let payload = null;
    if (state.solved) {
      payload = await state.solved;
      state.solved = null;
    }
    let response = await mint(payload, signal);
    if (response.status === 403) {
      const body = await response.clone().json().catch(() => ({}));
      const code = body.error && body.error.code;
      if (code && code.startsWith("human_check")) {
        response = await mint(await challengeSolution(signal), signal);
      }
    }
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Refusal(response.status, body);
    return body;
  }

  // A website token lives a minute (WEB_TOKEN_TTL_S): one serves a submission and the polls
  // that follow, and a new one is minted when it is about to run out.
  async function apiToken(signal, fresh) {
    const cached = state.token;
    if (!fresh && cached && cached.expires_at - Date.now() / 1000 > 15) return cached.token;
    state.token = await websiteToken(signal);
    return state.token.token;
  }

  // A call to the job API with the website token; one retry with a new token when the
  // server says it expired meanwhile.
  async function jobApi(path, method, signal) {
    let response;
    for (const fresh of [false, true]) {
      const headers = { Authorization: `Bearer ${await apiToken(signal, fresh)}`, Accept: "application/json" };
      response = await fetch(path, { method, headers, signal });
      if (response.status !== 401) break;
    }
    const body = await response.json().catch(() => ({}));
    return { response, body };
  }

  // ---------------------------------------------------------------- generating
  class Refusal extends Error {
    constructor(status, body) {
      super(errorText(body));
      this.status = status;
      this.body = body;
    }
  }

  function errorText(body) {
    return (body && body.error && body.error.message) || "unknown error";
  }

  function announce(text) { el.status.textContent = text; }

  function showError(html) {
    el.error.innerHTML = "";
    if (html) {
      const box = document.createElement("div");
      box.className = "message error";
      box.innerHTML = html;
      el.error.append(box);
    }
  }

  const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
  })[c]);

  function explain(error) {
    const status = error.status || 0;
    const body = error.body || {};
    const code = (body.error && body.error.code) || "";
    const type = (body.error && body.error.type) || "";
    const message = escapeHtml(error.message);
    if (status === 402) {
      return data.signed_in
        ? `Not enough credit for this model. <a href="/billing">Top up your balance</a> or pick a free model.`
        : `This model is paid. <a href="/signup">Create an account</a> and add credit, or pick a free model.`;
    }
    if (code === "deposit_required" || (status === 429 && !type.startsWith("upstream"))) {
      return `${message} <a href="/billing">Add credit</a>.`;
    }
    if (type === "upstream_error" && status === 400) {
      return `The model refused this request: ${message}`;
    }
    if (status >= 500 || type === "upstream_error") {
      return `The generation failed: ${message} You were not charged.`.replace("charged. You were not charged.", "charged.");
    }
    return message;
  }

  function endpoint(m) {
    return m.modality === "video" ? "/v1/openai/videos/generations" : "/v1/openai/images/generations";
  }

  function requestBody(f) {
    const m = current();
    const mask = el.mask.files && el.mask.files[0];
    if (!state.files.length && !mask) return { body: JSON.stringify(f), json: true };
    const multipart = new FormData();
    for (const [name, value] of Object.entries(f)) multipart.append(name, String(value));
    for (const file of state.files) multipart.append("image[]", file, file.name);
    if (mask && m.mask) multipart.append("mask", mask, mask.name);
    return { body: multipart, json: false };
  }

  // ---------------------------------------------------------------- one run (sync or job)
  // `state.running` while something runs: its AbortController, the job once the server
  // named it, and `cancel` asked before the 202 arrived.
  function begin(words) {
    const run = { controller: new AbortController(), job: null, cancel: false, wake: null, started: performance.now() };
    state.running = run;
    el.submit.disabled = true;
    el.cancel.hidden = false;
    el.cancel.disabled = false;
    announce(words);
    run.tick = setInterval(() => {
      el.elapsed.textContent = `${((performance.now() - run.started) / 1000).toFixed(1)} s`;
    }, 100);
    return run;
  }

  function end(run) {
    clearInterval(run.tick);
    el.elapsed.textContent = "";
    if (state.running === run) state.running = null;
    el.submit.disabled = false;
    el.cancel.hidden = true;
    show("pg-job", false);
    el.status.classList.remove("visually-hidden");
  }

  async function generate(event) {
    event.preventDefault();
    if (state.running) return;
    const m = current();
    const f = fields();
    if (!f.prompt.trim()) {
      showError("Write a prompt first.");
      el.prompt.focus();
      return;
    }
    showError("");
    const run = begin(m.modality === "video" && useJobs ? "Submitting the job…" : "Generating…");
    el.cancel.focus();
    try {
      const token = await apiToken(run.controller.signal);
      const { body, json } = requestBody(f);
      const headers = { Authorization: `Bearer ${token}`, Accept: "application/json" };
      if (json) headers["Content-Type"] = "application/json";
      if (useJobs) headers.Prefer = "respond-async";
      run.submitted = true;
      const response = await fetch(endpoint(m), {
        method: "POST", headers, body, signal: useJobs ? undefined : run.controller.signal,
      });
      const text = await response.text();
      let answer = {};
      try { answer = JSON.parse(text.trim() || "{}"); } catch (error) { answer = {}; }
      // After a long wait the status is 200 and an error may come in the body (heartbeat).
      if (!response.ok || answer.error) throw new Refusal(response.ok ? 502 : response.status, answer);
      if (response.status === 202 && answer.object === "job") {
        const context = { model: m.id, fields: f, files: state.files.map((file) => file.name),
          mask: el.mask.files && el.mask.files[0] ? el.mask.files[0].name : null };
        keepJob(answer.id, context);
        await follow(run, answer, context);
        return;
      }
      const seconds = (performance.now() - run.started) / 1000;
      showResult(m, f, answer, response.headers.get("X-Generation-Id"), seconds);
    } catch (error) {
      if (error.name === "AbortError") {
        // Only a guest's synchronous request, or a job's submission before it was sent,
        // is aborted. A guest may use only free models, so nothing was charged; the
        // generation itself may still finish on the server.
        announce(run.submitted
          ? "Stopped waiting. Guest generations are free: nothing was charged."
          : "Cancelled before anything was sent. You were not charged.");
      } else if (error instanceof Refusal) {
        announce("The generation did not complete.");
        showError(explain(error));
      } else {
        announce("The generation did not complete.");
        showError(escapeHtml(error.message || "The request failed: check your connection and try again."));
      }
    } finally {
      end(run);
      refreshFreeTier();
      presolve();
    }
  }

  // ---------------------------------------------------------------- jobs
  function loadJob() {
    try { return JSON.parse(localStorage.getItem(JOB_KEY) || "null"); } catch (error) { return null; }
  }

  function keepJob(id, context) {
    try { localStorage.setItem(JOB_KEY, JSON.stringify({ id, ...context, at: Date.now() })); } catch (error) { /* full */ }
    setJobParam(id);
  }

  function forgetJob(id) {
    const kept = loadJob();
    if (kept && kept.id === id) localStorage.removeItem(JOB_KEY);
  }

  function setJobParam(id) {
    const url = new URL(location.href);
    if (id) url.searchParams.set("job", id); else url.searchParams.delete("job");
    history.replaceState(null, "", url);
  }

  const JOB_WORDS = {
    queued: "Queued: the credit is held, the vendor has not started yet.",
    running: "Running at the vendor.",
  };

  function showJob(job) {
    show("pg-job", true);
    // The panel says it in full; the status line stays for screen readers only.
    el.status.classList.add("visually-hidden");
    const badge = $("pg-job-state");
    badge.textContent = job.status;
    const progress = $("pg-progress");
    const words = job.status === "running" && job.progress != null
      ? `Running at the vendor: ${Math.round(job.progress * 100)} % done.`
      : JOB_WORDS[job.status] || job.status;
    $("pg-job-words").textContent = words;
    if (job.progress != null) progress.value = job.progress; else progress.removeAttribute("value");
    $("pg-job-usage").href = `${data.usage_url}${encodeURIComponent(job.id)}`;
  }

  // Waits `ms`, or less when `run.wake()` is called (Cancel), or throws when aborted.
  function pause(run, ms) {
    const signal = run.controller.signal;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(done, ms);
      function aborted() { settle(); reject(new DOMException("aborted", "AbortError")); }
      function done() { settle(); resolve(); }
      function settle() {
        clearTimeout(timer);
        run.wake = null;
        signal.removeEventListener("abort", aborted);
      }
      if (signal.aborted) { aborted(); return; }
      run.wake = done;
      signal.addEventListener("abort", aborted);
    });
  }

  // Polls the job until it has finished, then shows how it ended. Polls start quick (an
  // image takes seconds) and slow down to every 3 s for videos, 1 s for images.
  async function follow(run, job, context) {
    run.job = job;
    const video = job.modality === "video";
    let delay = video ? 1000 : 250;
    let said = "";
    if (run.cancel) await cancelJob(run);
    while (!FINAL.has(run.job.status)) {
      showJob(run.job);
      if (said !== run.job.status) {
        said = run.job.status;
        announce(said === "queued" ? "Job queued." : "Job running at the vendor.");
      }
      await pause(run, delay);
      delay = Math.min(delay * 1.5, video ? 3000 : 1000);
      if (FINAL.has(run.job.status)) break; // Cancel answered meanwhile
      let polled;
      try {
        polled = await jobApi(`/v1/jobs/${encodeURIComponent(run.job.id)}`, "GET", run.controller.signal);
      } catch (error) {
        if (error.name === "AbortError" || error instanceof Refusal) throw error;
        continue; // the network dropped for a moment: the job runs on, ask again
      }
      const { response, body } = polled;
      if (response.status === 404 || response.status === 400) throw new Refusal(response.status, body);
      if (!response.ok) continue; // a passing failure (a restart, 503): ask again
      if (!FINAL.has(run.job.status)) run.job = body; // a Cancel's answer is newer
    }
    finished(run.job, context);
  }

  function finished(job, context) {
    forgetJob(job.id);
    show("pg-job", false);
    el.status.classList.remove("visually-hidden");
    if (job.status === "succeeded") {
      const m = models.get(job.model) || { id: job.model, modality: job.modality };
      const f = context && context.fields ? context.fields : { model: job.model, prompt: "" };
      if (job.error) {
        // Succeeded, but its outputs are gone (past retention, or never kept).
        announce("This job succeeded, but its result is no longer kept.");
        showError(escapeHtml(job.error.message));
        return;
      }
      const seconds = job.finished != null && job.created != null ? job.finished - job.created : 0;
      showResult(m, f, job, job.id, seconds, context || {});
    } else if (job.status === "cancelled") {
      announce("Cancelled. You were not charged.");
    } else {
      announce("The generation did not complete.");
      const error = job.error || {};
      const refused = /moderation|rejected|refus/.test(`${error.code || ""} ${error.message || ""}`);
      showError(refused
        ? `The model refused this request: ${escapeHtml(error.message || "")}`
        : explain(new Refusal(502, { error: { ...error, type: "upstream_error" } })));
    }
  }

  async function cancelJob(run) {
    el.cancel.disabled = true;
    announce("Cancelling…");
    const { response, body } = await jobApi(`/v1/jobs/${encodeURIComponent(run.job.id)}/cancel`, "POST", run.controller.signal);
    // 409: it finished first; the next poll shows how.
    if (response.ok) run.job = body;
    else if (response.status !== 409) showError(explain(new Refusal(response.status, body)));
    if (run.wake) run.wake();
  }

  function cancel() {
    const run = state.running;
    if (!run || el.cancel.disabled) return;
    if (run.job) {
      cancelJob(run).catch(() => { el.cancel.disabled = false; });
    } else if (useJobs && run.submitted) {
      // The job is on its way (or being looked up): cancel it as soon as it is known.
      run.cancel = true;
      el.cancel.disabled = true;
      announce("Cancelling…");
    } else {
      run.controller.abort(); // nothing sent yet, or a guest's synchronous request
    }
  }

  // A job named in the address (`?job=`), or the one this browser left running: follow it.
  async function resume() {
    const asked = new URL(location.href).searchParams.get("job");
    const kept = loadJob();
    const id = asked || (kept && kept.id);
    if (!id) return;
    if (!useJobs) {
      if (asked) showError(`<a href="/signin">Sign in</a> to see this job: jobs belong to an account.`);
      return;
    }
    const context = kept && kept.id === id ? kept : null;
    if (context && models.has(context.model) && el.model.value !== context.model) {
      el.model.value = context.model;
      applyModel();
    }
    if (context && context.fields) el.prompt.value = context.fields.prompt;
    const run = begin("Looking up your job…");
    run.submitted = true; // a job exists: Cancel cancels it, never just the lookup
    try {
      const { response, body } = await jobApi(`/v1/jobs/${encodeURIComponent(id)}`, "GET", run.controller.signal);
      if (!response.ok) throw new Refusal(response.status, body);
      if (!context && models.has(body.model) && el.model.value !== body.model) {
        el.model.value = body.model;
        applyModel();
      }
      // The job started before this page: count from its creation (the server's clock).
      const serverNow = Date.parse(response.headers.get("Date") || "") || Date.now();
      run.started = performance.now() - Math.max(0, serverNow - body.created * 1000);
      await follow(run, body, context);
    } catch (error) {
      if (error.name === "AbortError") {
        announce("Cancelled. You were not charged.");
      } else if (error instanceof Refusal && error.status === 404) {
        forgetJob(id);
        setJobParam(null);
        announce("");
        // Only an address says so; a job this browser kept for another account is dropped.
        if (asked) showError("That job is not in your account (it may belong to another account).");
      } else {
        announce("Could not follow the job.");
        showError(`${escapeHtml(error.message || "The request failed")}. Reload the page to try again.`);
      }
    } finally {
      end(run);
      refreshFreeTier();
    }
  }

  function outputUrl(item, m, f) {
    if (item.url) return item.url;
    const type = m.modality === "video" ? "video/mp4" : `image/${f.output_format || "png"}`;
    return item.b64_json ? `data:${type};base64,${item.b64_json}` : "";
  }

  // `context`: undefined for a synchronous answer (the form is what was sent); for a job,
  // what this browser kept of its request (`{}` when nothing: the code is then not shown).
  function showResult(m, f, answer, generationId, seconds, context) {
    const items = answer.data || [];
    const urls = items.map((item) => outputUrl(item, m, f)).filter(Boolean);
    const figures = urls.map((url, i) => {
      const figure = document.createElement("figure");
      const label = `${m.modality === "video" ? "Video" : "Image"} ${i + 1} of ${urls.length}${f.prompt ? ` for “${f.prompt}”` : ""}`;
      let media;
      if (m.modality === "video") {
        media = document.createElement("video");
        media.controls = true;
        media.src = url;
        media.setAttribute("aria-label", label);
      } else {
        media = document.createElement("img");
        media.src = url;
        media.alt = label;
      }
      const caption = document.createElement("figcaption");
      const download = document.createElement("a");
      download.className = "button small secondary";
      download.href = url;
      download.download = `${m.id.replace(/[^a-z0-9]+/gi, "-")}-${i + 1}.${m.modality === "video" ? "mp4" : (f.output_format || "png")}`;
      download.textContent = `Download ${m.modality === "video" ? "video" : "image " + (i + 1)}`;
      caption.append(download);
      figure.append(media, caption);
      return figure;
    });
    const facts = document.createElement("p");
    facts.className = "pg-result-facts";
    const cost = Number(answer.cost || 0);
    const latency = answer.latency != null ? `${(answer.latency / 1000).toFixed(1)} s at the vendor` : "";
    facts.innerHTML = `<span>Cost: <strong id="pg-cost">${cost === 0 ? "free" : usd(cost)}</strong></span>`
      + `<span>Took ${seconds.toFixed(1)} s${latency ? " (" + latency + ")" : ""}</span>`
      + (generationId && data.signed_in
        ? `<a href="${data.usage_url}${encodeURIComponent(generationId)}">See it in your usage</a>` : "");
    const grid = document.createElement("div");
    grid.className = urls.length > 1 ? "pg-images several" : "pg-images";
    grid.append(...figures);
    el.result.replaceChildren(facts, grid);
    announce(`Done: ${urls.length} ${m.modality === "video" ? "video" : "image"}${urls.length === 1 ? "" : "s"} in ${seconds.toFixed(1)} seconds, cost ${cost === 0 ? "nothing" : usd(cost)}.`);
    if (!context || context.fields) showCode(m, f, context);
    else el.code.hidden = true;
    remember({ id: generationId, model: m.id, modality: m.modality, urls, cost, at: Date.now() });
    if (data.signed_in) refreshBalance();
  }

  // ---------------------------------------------------------------- the request as code
  function showCode(m, f, context) {
    const base = data.base_url;
    const shown = { ...f };
    const python = [];
    const files = context ? context.files || [] : state.files.map((file) => file.name);
    const formMask = el.mask.files && el.mask.files[0] ? el.mask.files[0].name : null;
    const mask = context ? context.mask : formMask;
    let curl;
    if (files.length || mask) {
      curl = [`curl ${base}${endpoint(m)} \\`, `  -H "Authorization: Bearer $IMAGE_ROUTER_KEY" \\`];
      for (const [name, value] of Object.entries(shown)) curl.push(`  -F ${shellQuote(`${name}=${value}`)} \\`);
      for (const name of files) curl.push(`  -F ${shellQuote(`image[]=@${name}`)} \\`);
      if (mask) curl.push(`  -F ${shellQuote(`mask=@${mask}`)} \\`);
      curl[curl.length - 1] = curl[curl.length - 1].replace(/ \\$/, "");
    } else {
      curl = [
        `curl ${base}${endpoint(m)} \\`,
        `  -H "Authorization: Bearer $IMAGE_ROUTER_KEY" \\`,
        `  -H 'Content-Type: application/json' \\`,
        `  -d ${shellQuote(JSON.stringify(shown))}`,
      ];
    }
    $("pg-code-curl").textContent = curl.join("\n");
    if (m.modality === "video") {
      python.push("import os, httpx", "", `response = httpx.post(`, `    "${base}${endpoint(m)}",`,
        `    headers={"Authorization": f"Bearer {os.environ['IMAGE_ROUTER_KEY']}"},`,
        `    json=${pyLiteral(shown)},`, "    timeout=1200,", ")", "print(response.json())");
    } else {
      const args = Object.entries(shown).filter(([k]) => !["model", "prompt"].includes(k));
      const edit = files.length > 0;
      python.push("import os", "from openai import OpenAI", "",
        `client = OpenAI(api_key=os.environ["IMAGE_ROUTER_KEY"], base_url="${base}/v1/openai")`,
        `result = client.images.${edit ? "edit" : "generate"}(`,
        `    model=${JSON.stringify(shown.model)},`, `    prompt=${JSON.stringify(shown.prompt)},`);
      if (edit) python.push(`    image=[${files.map((n) => `open(${JSON.stringify(n)}, "rb")`).join(", ")}],`);
      if (edit && mask) python.push(`    mask=open(${JSON.stringify(mask)}, "rb"),`);
      for (const [name, value] of args) python.push(`    ${name}=${pyLiteral(value)},`);
      python.push(")", "print([item.url for item in result.data])");
    }
    $("pg-code-python").textContent = python.join("\n");
    el.code.hidden = false;
  }

  const shellQuote = (text) => `'${String(text).replace(/'/g, "'\\''")}'`;
  function pyLiteral(value) {
    if (typeof value === "number") return String(value);
    if (typeof value === "string") return JSON.stringify(value);
    const parts = Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${pyLiteral(v)}`);
    return `{${parts.join(", ")}}`;
  }

  // ---------------------------------------------------------------- recent generations
  function loadRecent() {
    try { return JSON.parse(localStorage.getItem(RECENT_KEY) || "[]"); } catch (error) { return []; }
  }

  function remember(entry) {
    if (!entry.urls.length || entry.urls[0].startsWith("data:")) {
      addTile(entry);
      return;
    }
    if (!data.signed_in) {
      const recent = [entry, ...loadRecent()].slice(0, 12);
      try { localStorage.setItem(RECENT_KEY, JSON.stringify(recent)); } catch (error) { /* full */ }
    }
    addTile(entry);
  }

  function tile(entry) {
    const item = document.createElement("li");
    const link = document.createElement("a");
    link.className = "pg-tile";
    link.href = entry.urls[0];
    if (entry.modality === "video") {
      const span = document.createElement("span");
      span.className = "pg-video-tile";
      span.textContent = "Video";
      link.append(span);
    } else {
      const img = document.createElement("img");
      img.src = entry.urls[0];
      img.alt = `Result of ${entry.model}`;
      img.loading = "lazy";
      link.append(img);
    }
    const text = document.createElement("span");
    text.className = "pg-tile-text";
    text.textContent = `${entry.model} · ${Number(entry.cost) === 0 ? "free" : usd(Number(entry.cost))}`;
    link.append(text);
    item.append(link);
    return item;
  }

  function addTile(entry) {
    el.gallery.prepend(tile(entry));
    while (el.gallery.children.length > 12) el.gallery.lastElementChild.remove();
  }

  if (!data.signed_in) {
    el.gallery.replaceChildren(...loadRecent().map(tile));
  }

  // ---------------------------------------------------------------- counters
  async function refreshFreeTier() {
    try {
      const response = await fetch("/v1/free-tier", { headers: { Accept: "application/json" } });
      if (!response.ok) return;
      const body = await response.json();
      el.freeLeft.textContent = `${body.remaining} of ${body.limit} free generations left today`;
    } catch (error) { /* keep the last count */ }
  }

  async function refreshBalance() {
    const balance = $("pg-balance");
    if (!balance) return;
    try {
      const response = await fetch("/v1/account", { headers: { Accept: "application/json" } });
      if (!response.ok) return;
      const body = await response.json();
      if (body.balance && body.balance.usd != null) balance.textContent = usd(body.balance.usd);
    } catch (error) { /* keep the last balance */ }
  }

  // ---------------------------------------------------------------- wiring
  el.model.addEventListener("change", applyModel);
  for (const control of [el.size, el.quality, el.n, el.seconds, el.format]) {
    control.addEventListener("change", requestQuote);
  }
  el.n.addEventListener("input", requestQuote);
  form.addEventListener("submit", generate);
  el.cancel.addEventListener("click", cancel);
  el.prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && state.running) cancel();
  });

  applyModel();
  presolve();
  resume();
})();
