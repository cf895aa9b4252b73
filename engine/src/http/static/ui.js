// Refreshes a Fletch page while something on it runs: the server renders every page
// whole, so this only fetches the page again and swaps its content in.
(function () {
  "use strict";
  var note = document.getElementById("refresh");
  function setNote(text) {
    if (note) { note.textContent = text; }
  }
  function refresh() {
    if (document.body.getAttribute("data-live") !== "true") {
      setNote("Up to date: nothing on this page is running.");
      return;
    }
    setNote("Live: refreshing every second.");
    fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        var content = fresh.getElementById("content");
        if (content) {
          document.getElementById("content").innerHTML = content.innerHTML;
          document.body.setAttribute("data-live", fresh.body.getAttribute("data-live"));
        }
        window.setTimeout(refresh, 1000);
      })
      .catch(function (error) {
        setNote("Could not refresh (" + error.message + "); retrying.");
        window.setTimeout(refresh, 2000);
      });
  }
  window.setTimeout(refresh, 1000);
  setNote(document.body.getAttribute("data-live") === "true"
    ? "Live: refreshing every second." : "Up to date: nothing on this page is running.");
})();
