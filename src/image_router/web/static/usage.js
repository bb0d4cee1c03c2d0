// /usage: rows still queued or running (`tr[data-active]`) are read again every few
// seconds, from this same page on the server, until each has finished; its cells are
// swapped in place (the prompt cell, which holds a form, stays) and the live region says
// how each ended. Without this script the page says to refresh it.
(() => {
  "use strict";

  const live = document.getElementById("usage-live");
  const running = () => [...document.querySelectorAll("tr[data-active]")];
  if (!live || !running().length) return;
  live.textContent = "Requests still running update on this page by themselves.";
  const hideRefresh = (root) => { for (const note of root.querySelectorAll(".job-refresh")) note.hidden = true; };
  hideRefresh(document);

  async function fetchPage(url) {
    const response = await fetch(url, { headers: { Accept: "text/html" }, credentials: "same-origin" });
    if (!response.ok) return null;
    return new DOMParser().parseFromString(await response.text(), "text/html");
  }

  function swap(row, fresh) {
    for (const name of ["data-job-status", "data-active"]) {
      if (fresh.hasAttribute(name)) row.setAttribute(name, fresh.getAttribute(name));
      else row.removeAttribute(name);
    }
    [...fresh.cells].forEach((cell, i) => {
      const old = row.cells[i];
      if (!old || old.classList.contains("prompt")) return;
      const copy = document.importNode(cell, true);
      hideRefresh(copy);
      old.replaceWith(copy);
    });
  }

  let delay = 2000;
  async function check() {
    const rows = running();
    const ended = [];
    try {
      const page = await fetchPage(location.href);
      if (page) {
        for (const row of rows) {
          // A row pushed to another page by newer requests is read on its own.
          let fresh = page.getElementById(row.id);
          if (!fresh) {
            const alone = await fetchPage(`/usage?id=${encodeURIComponent(row.dataset.logId)}`);
            fresh = alone && alone.getElementById(row.id);
          }
          if (!fresh) continue;
          swap(row, fresh);
          if (!fresh.hasAttribute("data-active")) {
            const model = row.querySelector("td.model");
            ended.push(`${model ? model.textContent : "A request"} ${fresh.dataset.jobStatus}`);
          }
        }
        const totals = page.getElementById("usage-totals");
        const shown = document.getElementById("usage-totals");
        if (totals && shown) shown.replaceWith(document.importNode(totals, true));
      }
    } catch (error) { /* offline for a moment: try again later */ }
    if (ended.length) live.textContent = `Finished: ${ended.join("; ")}.`;
    if (running().length) {
      delay = Math.min(delay * 1.5, 10000);
      setTimeout(check, delay);
    } else if (!ended.length) {
      live.textContent = "Every request on this page has finished.";
    }
  }
  setTimeout(check, delay);
})();
