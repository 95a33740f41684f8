// The desk's own script: live updates, attachments with progress and verified hashes,
// and fields that appear when they are needed. The pages work without it; it makes them live.
"use strict";

(function () {
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

  function announce(text) {
    const status = document.getElementById("live-status");
    if (status) {
      status.textContent = "";
      window.setTimeout(() => { status.textContent = text || status.dataset.updated; }, 50);
    }
  }

  // ---- live updates (Server-Sent Events) ----
  let refreshing = false;
  let again = false;

  // Fetches the page again and swaps every region marked data-live, leaving the rest
  // (focus, what is being typed) untouched.
  async function refresh() {
    if (refreshing) { again = true; return; }
    refreshing = true;
    try {
      const response = await fetch(window.location.href, { credentials: "same-origin" });
      if (response.ok) {
        const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
        let changed = false;
        document.querySelectorAll("[data-live][id]").forEach((region) => {
          const next = fresh.getElementById(region.id);
          if (next && next.innerHTML !== region.innerHTML && !region.contains(document.activeElement)) {
            region.innerHTML = next.innerHTML;
            changed = true;
          }
        });
        if (changed) { announce(); wire(document); }
      }
    } finally {
      refreshing = false;
      if (again) { again = false; refresh(); }
    }
  }

  function appendEntry(data) {
    const list = document.getElementById("messages");
    if (!list || list.dataset.thread !== data.thread || document.getElementById("seq-" + data.seq)) { return; }
    const template = document.createElement("template");
    template.innerHTML = data.html.trim();
    const item = template.content.firstElementChild;
    // Entries arrive in order per thread; a late one goes before any later one already shown.
    const last = list.lastElementChild;
    const later = !last || Number(last.dataset.seq) < data.seq
      ? null
      : Array.from(list.children).find((li) => Number(li.dataset.seq) > data.seq);
    list.insertBefore(item, later);
    wire(item);
    window.dispatchEvent(new CustomEvent("desk:entry", { detail: data.seq }));
  }

  function listen() {
    if (!window.EventSource) { return; }
    // A thread's page asks for what was stored after its last entry, in case it came in meanwhile.
    const list = document.getElementById("messages");
    let query = "";
    if (list) {
      const last = list.lastElementChild;
      query = "?" + new URLSearchParams({ thread: list.dataset.thread, after: last ? last.dataset.seq : "0" }).toString();
    }
    const source = new EventSource("/events" + query);
    source.addEventListener("entry", (event) => appendEntry(JSON.parse(event.data)));
    source.addEventListener("refresh", refresh);
    source.addEventListener("open", () => {
      document.documentElement.dataset.live = "open";
      refresh();
    });
  }

  // ---- attachments ----
  function upload(form) {
    const input = form.querySelector('input[type="file"]');
    const progress = form.querySelector("progress");
    const result = form.querySelector("output");
    const file = input.files[0];
    if (!file) { return; }
    const query = new URLSearchParams({ name: file.name, type: file.type || "application/octet-stream" });
    const request = new XMLHttpRequest();
    request.open("POST", "/cases/" + form.dataset.case + "/attachments?" + query.toString());
    request.setRequestHeader("x-csrf-token", csrf());
    request.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) { progress.value = Math.round((100 * e.loaded) / e.total); progress.textContent = progress.value + "%"; }
    });
    request.addEventListener("load", () => {
      if (request.status === 200) {
        const answer = JSON.parse(request.responseText);
        progress.value = 100;
        result.textContent = result.dataset.done + " SHA-256 " + answer.sha256;
        result.dataset.sha256 = answer.sha256;
        form.reset();
      } else {
        result.textContent = result.dataset.failed + " (" + request.status + ")";
      }
    });
    request.addEventListener("error", () => { result.textContent = result.dataset.failed; });
    request.send(file);
  }

  function hex(buffer) {
    return Array.from(new Uint8Array(buffer)).map((b) => b.toString(16).padStart(2, "0")).join("");
  }

  // Downloads through the desk (which verified the file against its hash already) and checks the
  // bytes the browser received against the hash in the thread once more before saving them.
  async function download(button) {
    const box = button.closest(".attachment");
    const progress = box.querySelector("progress");
    const result = box.querySelector("output");
    const response = await fetch(button.dataset.url, { credentials: "same-origin" });
    if (!response.ok) { result.textContent = button.dataset.mismatch + " (" + response.status + ")"; return; }
    const total = Number(response.headers.get("content-length")) || 0;
    const reader = response.body.getReader();
    const parts = [];
    let received = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) { break; }
      parts.push(value);
      received += value.length;
      if (total) { progress.value = Math.round((100 * received) / total); progress.textContent = progress.value + "%"; }
    }
    progress.value = 100;
    const blob = new Blob(parts);
    const digest = hex(await crypto.subtle.digest("SHA-256", await blob.arrayBuffer()));
    result.dataset.sha256 = digest;
    if (digest !== button.dataset.sha256) { result.textContent = button.dataset.mismatch; return; }
    result.textContent = button.dataset.verified + " " + digest;
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = button.dataset.name;
    document.body.appendChild(link);
    link.click();
    link.remove();
  }

  // ---- fields that appear when needed ----
  function justification(form) {
    const receiver = form.querySelector("[data-receiver-select]");
    const basis = form.querySelector("[data-basis-select]");
    const box = form.querySelector("[data-justification]");
    if (!receiver || !basis || !box) { return; }
    const update = () => {
      basis.querySelectorAll("optgroup").forEach((group) => {
        group.hidden = receiver.value !== "" && group.dataset.receiver !== receiver.value;
        group.disabled = group.hidden;
      });
      const chosen = basis.selectedOptions[0];
      box.hidden = !(chosen && chosen.dataset.justify === "true");
    };
    receiver.addEventListener("change", update);
    basis.addEventListener("change", update);
    update();
  }

  function shownWhen(root) {
    root.querySelectorAll("[data-show-when]").forEach((target) => {
      const radio = document.getElementById(target.dataset.showWhen);
      if (!radio) { return; }
      const update = () => { target.hidden = !radio.checked; };
      radio.form.addEventListener("change", update);
      update();
    });
  }

  function wire(root) {
    root.querySelectorAll("button.download").forEach((button) => {
      if (!button.dataset.wired) { button.dataset.wired = "1"; button.addEventListener("click", () => download(button)); }
    });
    root.querySelectorAll("[data-print]").forEach((button) => {
      if (!button.dataset.wired) { button.dataset.wired = "1"; button.addEventListener("click", () => window.print()); }
    });
    shownWhen(root);
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("[data-back]").forEach((input) => { input.value = window.location.pathname + window.location.search; });
    const uploadForm = document.getElementById("upload-form");
    if (uploadForm) { uploadForm.addEventListener("submit", (e) => { e.preventDefault(); upload(uploadForm); }); }
    const offerForm = document.getElementById("offer-form");
    if (offerForm) { justification(offerForm); }
    const summary = document.getElementById("error-summary");
    if (summary) { summary.focus(); }
    wire(document);
    listen();
  });
})();
