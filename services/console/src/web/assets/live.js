// The live page: the call's events as they happen, from the server's event stream.
(function () {
  "use strict";
  var root = document.querySelector("[data-events]");
  if (!root) { return; }
  var chat = document.getElementById("chat");
  var rows = document.getElementById("events");
  var status = document.getElementById("status");
  var after = document.getElementById("after");
  var source = new EventSource(root.getAttribute("data-events"));

  function cell(tr, text, cls) {
    var td = document.createElement("td");
    td.textContent = text;
    if (cls) { td.className = cls; }
    tr.appendChild(td);
  }
  // A (re)connection replays the call from its first event: start the page over.
  source.addEventListener("open", function () {
    chat.textContent = "";
    rows.textContent = "";
    status.textContent = "Following the call…";
  });
  source.addEventListener("call", function (message) {
    var e = JSON.parse(message.data);
    var tr = document.createElement("tr");
    tr.setAttribute("data-kind", e.kind);
    cell(tr, "+" + e.t.toFixed(3) + " s", "num");
    cell(tr, String(e.turn), "num");
    cell(tr, e.kind);
    cell(tr, e.detail);
    rows.appendChild(tr);
    if (e.speaker) {
      var li = document.createElement("li");
      li.className = "line " + e.speaker;
      li.setAttribute("data-speaker", e.speaker);
      var who = document.createElement("span");
      who.className = "who";
      who.textContent = e.speaker === "caller" ? "Caller" : "Bot";
      var text = document.createElement("span");
      text.className = "text";
      text.textContent = e.text;
      li.appendChild(who);
      li.appendChild(text);
      chat.appendChild(li);
    }
  });
  source.addEventListener("end", function () {
    source.close();
    status.textContent = "The call ended.";
    after.hidden = false;
  });
  source.addEventListener("error", function () {
    if (source.readyState !== EventSource.CLOSED) { status.textContent = "Reconnecting…"; }
  });
})();
