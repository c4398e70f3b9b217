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
let choosable = new Set(); // keys of the buttons that can still be clicked
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
    case "choosable":
      choosable = new Set(frame.keys);
      updateButtons();
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
  item.append(name);
  if (message.choice) item.classList.add("choice");
  if (message.text) {
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = message.text;
    item.append(text);
  }
  for (const card of message.cards || []) item.append(renderCard(card));
  list.append(item);
  updateButtons();
  item.scrollIntoView({ block: "end" });
}

// A card: title, text, image and buttons. Links and images are http(s) only (the
// backend drops anything else), and open in a new tab without access to this page.
function renderCard(card) {
  const box = document.createElement("div");
  box.className = "card";
  if (card.title) {
    const title = document.createElement("strong");
    title.className = "card-title";
    title.textContent = card.title;
    box.append(title);
  }
  if (card.text) {
    const text = document.createElement("p");
    text.className = "card-text";
    text.textContent = card.text;
    box.append(text);
  }
  if (card.image) {
    const image = document.createElement("img");
    image.className = "card-image";
    image.src = card.image;
    image.alt = card.title || "";
    box.append(image);
  }
  const buttons = document.createElement("div");
  buttons.className = "buttons";
  for (const spec of card.buttons) {
    if (spec.kind === "link") {
      if (!spec.link) continue; // not an http(s) link: nothing safe to open
      const link = document.createElement("a");
      link.className = "link-button";
      link.href = spec.link;
      link.target = "_blank";
      link.rel = "noopener noreferrer";
      link.textContent = spec.text;
      buttons.append(link);
    } else {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "choice-button";
      button.dataset.key = spec.key;
      button.textContent = spec.text;
      button.disabled = true; // until the backend says it can be chosen
      button.addEventListener("click", () => {
        if (send({ type: "choose", key: spec.key })) {
          errorLine.hidden = true;
          button.disabled = true; // one click; the backend's next frame decides
        }
      });
      buttons.append(button);
    }
  }
  box.append(buttons);
  return box;
}

function updateButtons() {
  for (const button of list.querySelectorAll("button.choice-button")) {
    button.disabled = !choosable.has(button.dataset.key);
  }
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
