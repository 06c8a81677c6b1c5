// Starts Swagger UI on /docs: a file of its own, since the page allows no inline script.
"use strict";
(function () {
  const root = document.getElementById("explorer");
  window.ui = SwaggerUIBundle({
    url: root.dataset.spec,
    domNode: root,
    deepLinking: true,
    // The collector's answers need a token: "Authorize" takes it once for every call.
    persistAuthorization: false,
    layout: "BaseLayout",
  });
})();
