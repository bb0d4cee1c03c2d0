// Starts Swagger UI (served by us from the fastapi-offline package) in #api-docs.
window.addEventListener("DOMContentLoaded", () => {
  "use strict";
  const root = document.getElementById("api-docs");
  if (!root || !window.SwaggerUIBundle) return;
  window.SwaggerUIBundle({
    url: root.dataset.spec,
    domNode: root,
    deepLinking: true,
    validatorUrl: null, // no badge fetched from a third party
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
