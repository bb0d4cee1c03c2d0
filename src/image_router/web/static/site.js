// Progressive enhancement for every page; everything works without it.
// Copy buttons: <button type="button" data-copy="ID" data-copy-status="STATUS_ID" hidden>.
// They stay hidden without JavaScript (nothing could copy), and show once this runs.
(() => {
  "use strict";

  async function copy(button) {
    const source = document.getElementById(button.dataset.copy);
    const status = document.getElementById(button.dataset.copyStatus || "");
    if (!source) return;
    try {
      await navigator.clipboard.writeText(source.textContent);
      if (status) status.textContent = "Copied.";
    } catch (error) {
      if (status) status.textContent = "Could not copy: select the text and copy it by hand.";
    }
  }

  function enhance() {
    for (const button of document.querySelectorAll("button[data-copy]")) {
      button.hidden = false;
      button.addEventListener("click", () => copy(button));
    }
    // The small-screen menu: Escape closes it and gives focus back to its toggle.
    const toggle = document.getElementById("nav-toggle");
    if (toggle) {
      document.addEventListener("keydown", (event) => {
        if (event.key === "Escape" && toggle.checked) {
          toggle.checked = false;
          toggle.focus();
        }
      });
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", enhance);
  } else {
    enhance();
  }
})();
