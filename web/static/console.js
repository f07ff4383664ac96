// kiln console: shows every <time datetime="…"> in the viewer's own timezone. Pages render
// times in UTC, so without this script they stay correct, just in UTC. Runs on load and on
// every fragment htmx swaps in.
(function () {
  "use strict";
  var format = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short"
  });
  function localize(root) {
    var times = (root.querySelectorAll ? root : document).querySelectorAll("time[datetime]");
    for (var i = 0; i < times.length; i++) {
      var element = times[i];
      if (element.dataset.local) continue;
      var at = new Date(element.getAttribute("datetime"));
      if (isNaN(at.getTime())) continue;
      element.title = element.textContent;
      element.textContent = format.format(at);
      element.dataset.local = "1";
    }
  }
  document.addEventListener("DOMContentLoaded", function () { localize(document); });
  document.addEventListener("htmx:load", function (event) { localize(event.target); });
})();
