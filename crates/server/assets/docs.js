// The API page: Swagger UI over this server's /openapi.json. A key typed
// in the form is sent as a bearer token with every request the page makes
// (the document's own fetch included), and kept in this tab's
// sessionStorage only. Nothing is fetched from anywhere but this server.
(function () {
  "use strict";
  var STORE = "vectorizer-key";
  var input = document.getElementById("key");
  input.value = sessionStorage.getItem(STORE) || "";
  function start() {
    window.ui = SwaggerUIBundle({
      url: "/openapi.json",
      dom_id: "#ui",
      deepLinking: true,
      // The public validator badge would call a server elsewhere.
      validatorUrl: null,
      requestInterceptor: function (req) {
        var key = sessionStorage.getItem(STORE);
        if (key) {
          req.headers["Authorization"] = "Bearer " + key;
        }
        return req;
      },
    });
  }
  document.getElementById("auth").addEventListener("submit", function (e) {
    e.preventDefault();
    sessionStorage.setItem(STORE, input.value.trim());
    start();
  });
  start();
})();
