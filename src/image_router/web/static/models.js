// The catalog pages, made live; both work without it (plain GET forms).
// - /models: the filter form updates the results as you type or choose (the server renders
//   them: this fetches the same page and swaps the results in).
// - /models/{id}: the price calculator asks the server for the exact price
//   (GET /v1/models/{id}/quote, the pricing code the API charges with) on every change.
(() => {
  "use strict";

  function debounce(fn, ms) {
    let timer = null;
    return (...args) => {
      clearTimeout(timer);
      timer = setTimeout(() => fn(...args), ms);
    };
  }

  function queryOf(form) {
    const params = new URLSearchParams();
    for (const [name, value] of new FormData(form)) {
      if (value !== "") params.append(name, value);
    }
    return params;
  }

  function liveFilters(form) {
    const results = document.getElementById("model-results");
    if (!results) return;
    let latest = 0;
    const update = async () => {
      const query = queryOf(form).toString();
      const url = form.action + (query ? "?" + query : "");
      const ticket = ++latest;
      try {
        const answer = await fetch(url, { headers: { Accept: "text/html" } });
        if (!answer.ok || ticket !== latest) return;
        const page = new DOMParser().parseFromString(await answer.text(), "text/html");
        const fresh = page.getElementById("model-results");
        if (!fresh || ticket !== latest) return;
        results.replaceChildren(...fresh.childNodes);
        history.replaceState(null, "", url);
      } catch (error) {
        // Offline or refused: the Apply button still submits the form.
      }
    };
    form.addEventListener("change", update);
    form.addEventListener("input", debounce(update, 250));
  }

  // "0.0800" (the server's 4-decimal USD string) → "$0.08", as the page writes it.
  function formatUsd(usd) {
    const [whole, frac = ""] = usd.split(".");
    const digits = frac.replace(/0+$/, "");
    if (whole === "0" && digits === "") return "$0";
    return "$" + whole + "." + digits.padEnd(2, "0");
  }

  function liveQuote(form) {
    const amount = document.getElementById("quote-amount");
    const note = document.getElementById("quote-note");
    if (!amount || !note) return;
    let latest = 0;
    const update = async () => {
      const ticket = ++latest;
      try {
        const answer = await fetch(form.dataset.quoteUrl + "?" + queryOf(form).toString());
        const body = await answer.json();
        if (ticket !== latest) return;
        if (!answer.ok) {
          amount.textContent = "—";
          delete amount.dataset.credits;
          note.className = "message error";
          note.textContent = (body.error && body.error.message) || "This request cannot be priced.";
          return;
        }
        amount.textContent = formatUsd(body.usd);
        amount.dataset.credits = String(body.credits);
        note.className = "hint";
        note.textContent = (body.exact
          ? `Exactly what this request is charged (${body.credits} credits)`
          : `The most this request can be charged (${body.credits} credits held); you pay what ${body.provider} reports`)
          + (body.available ? "" : ", on a server where the vendor is configured")
          + ". Failures are free.";
      } catch (error) {
        // Keep the last answer; the Calculate button still asks the server.
      }
    };
    form.addEventListener("change", update);
    form.addEventListener("input", debounce(update, 250));
  }

  function enhance() {
    const filters = document.getElementById("model-filters");
    if (filters) liveFilters(filters);
    const quote = document.getElementById("quote-form");
    if (quote) liveQuote(quote);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", enhance);
  } else {
    enhance();
  }
})();
