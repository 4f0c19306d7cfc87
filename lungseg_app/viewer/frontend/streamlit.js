// The Streamlit component protocol (API version 1) without the npm library: four postMessage types.
const send = (type, data = {}) => window.parent.postMessage({ isStreamlitMessage: true, type, ...data }, "*");

export function onRender(callback) {
  window.addEventListener("message", (ev) => {
    if (ev.data && ev.data.type === "streamlit:render") callback(ev.data.args || {});
  });
  send("streamlit:componentReady", { apiVersion: 1 });
}

let lastHeight = -1;
export function setFrameHeight(height) {
  if (height !== lastHeight) { lastHeight = height; send("streamlit:setFrameHeight", { height }); }
}

export function setComponentValue(value) {
  send("streamlit:setComponentValue", { value, dataType: "json" });
}
