// Starts Swagger UI on /docs. A served file rather than FastAPI's inline <script>, so the page keeps
// its Content-Security-Policy (scripts from this origin only); the OpenAPI address comes from the
// page, and no validator badge is fetched from another site.
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapi,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  });
})();
