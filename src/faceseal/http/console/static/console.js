// faceseal console: the few things a server-rendered page cannot do alone. Loaded from the
// console itself (the Content-Security-Policy allows no inline script and no other origin).
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // "Copy" beside the one-time API key.
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", async () => {
      const source = document.getElementById(button.dataset.copy);
      if (!source) return;
      const text = source.textContent || "";
      try {
        await navigator.clipboard.writeText(text);
      } catch (_) {
        const range = document.createRange();  // no clipboard API: select it for Ctrl-C
        range.selectNodeContents(source);
        const selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
      }
      const copied = button.parentElement.querySelector("[data-copied]");
      if (copied) copied.hidden = false;
    });
  }

  // Preview the chosen photos (never uploaded until the form is sent).
  for (const input of document.querySelectorAll("input[type=file][data-preview]")) {
    input.addEventListener("change", () => {
      const box = document.getElementById(input.dataset.preview);
      if (!box) return;
      box.replaceChildren();
      for (const file of input.files) {
        const img = document.createElement("img");
        img.alt = "Preview of " + file.name;
        img.src = URL.createObjectURL(file);
        box.appendChild(img);
      }
    });
  }

  // Forms that ask before an irreversible or disruptive step.
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }

  // Follow long key work: reload while it runs.
  const running = document.querySelector("[data-refresh-seconds]");
  if (running) {
    const seconds = Number(running.dataset.refreshSeconds) || 2;
    window.setTimeout(() => window.location.reload(), seconds * 1000);
  }
});
