// The chat page: renders what the backend relays, and sends what the user types.
// Everything arrives as data (textContent), never as HTML.
"use strict";

const list = document.getElementById("messages");
const statusLine = document.getElementById("status");
const typingLine = document.getElementById("typing");
const errorLine = document.getElementById("error");
const form = document.getElementById("composer");
const input = document.getElementById("input");

const shown = new Set(); // message ids: a reconnect replays the history
const typing = new Set(); // names of the operators typing now
let socket = null;
let attempts = 0;
let typingSent = false;
let typingTimer = null;

function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  socket = new WebSocket(`${scheme}//${location.host}/ws`);
  socket.onmessage = (event) => handle(JSON.parse(event.data));
  socket.onclose = () => {
    statusLine.textContent = "Disconnected; reconnecting…";
    typing.clear();
    showTyping();
    setTimeout(connect, Math.min(10000, 500 * 2 ** attempts++));
  };
}

function handle(frame) {
  switch (frame.type) {
    case "ready":
      attempts = 0;
      document.body.dataset.visitorId = frame.visitor_id;
      statusLine.textContent = "Connected";
      break;
    case "message":
      addMessage(frame);
      break;
    case "typing":
      if (frame.typing) typing.add(frame.name);
      else typing.delete(frame.name);
      showTyping();
      break;
    case "ended":
      statusLine.textContent = "The chat has ended. Write again to start a new one.";
      break;
    case "error":
      errorLine.textContent = frame.message;
      errorLine.hidden = false;
      break;
  }
}

function addMessage(message) {
  if (shown.has(message.id)) return;
  shown.add(message.id);
  const item = document.createElement("li");
  item.className = message.sender;
  item.dataset.id = message.id;
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = message.name;
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = message.text;
  item.append(name, text);
  list.append(item);
  item.scrollIntoView({ block: "end" });
}

function showTyping() {
  const names = [...typing];
  typingLine.textContent = names.length
    ? `${names.join(", ")} ${names.length > 1 ? "are" : "is"} typing…`
    : "";
}

function send(frame) {
  if (!socket || socket.readyState !== WebSocket.OPEN) return false;
  socket.send(JSON.stringify(frame));
  return true;
}

function setTyping(on) {
  if (on !== typingSent && send({ type: "typing", typing: on })) typingSent = on;
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = input.value.trim();
  if (!text) return;
  if (send({ type: "send", text })) {
    input.value = "";
    errorLine.hidden = true;
    clearTimeout(typingTimer);
    setTyping(false);
  }
});

input.addEventListener("input", () => {
  setTyping(input.value !== "");
  clearTimeout(typingTimer);
  typingTimer = setTimeout(() => setTyping(false), 3000);
});

connect();
