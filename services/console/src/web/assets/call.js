// The call page: the events' time axis follows the player, and a click on it seeks.
(function () {
  "use strict";
  var audio = document.getElementById("call-audio");
  var axis = document.getElementById("axis");
  var playhead = document.getElementById("playhead");
  if (!audio || !axis || !playhead) { return; }
  var span = parseFloat(axis.getAttribute("data-span")) || 1;

  // The WAV may run past the last event (the bot's last audio): stretch the axis to it.
  function fit() {
    if (isFinite(audio.duration) && audio.duration > span) { span = audio.duration; }
    axis.setAttribute("viewBox", "0 0 " + span.toFixed(3) + " 10");
  }
  function follow() {
    var t = String(audio.currentTime.toFixed(3));
    playhead.setAttribute("x1", t);
    playhead.setAttribute("x2", t);
  }
  audio.addEventListener("loadedmetadata", fit);
  audio.addEventListener("timeupdate", follow);
  axis.addEventListener("click", function (event) {
    var box = axis.getBoundingClientRect();
    var at = (event.clientX - box.left) / box.width * span;
    audio.currentTime = Math.max(0, Math.min(at, isFinite(audio.duration) ? audio.duration : at));
    follow();
  });
  if (audio.readyState >= 1) { fit(); }
})();
