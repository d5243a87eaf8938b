// The /demo page: posts utterances to this service and draws the answers. No third-party code.
"use strict";

const $ = (id) => document.getElementById(id);
const COLORS = ["#d62728", "#2ca02c", "#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];
const SVG = "http://www.w3.org/2000/svg";
const state = { answers: [], recorder: null };

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function newConversation() {
  $("conversation").value = "demo-" + Math.random().toString(36).slice(2, 10);
  state.answers = [];
  render();
}

async function post(body, isForm, said) {
  const url = `/conversations/${encodeURIComponent($("conversation").value.trim())}/utterances`;
  const headers = {};
  const key = $("api-key").value.trim();
  if (key) headers.Authorization = "Bearer " + key;
  if (!isForm) headers["Content-Type"] = "application/json";
  setStatus("scoring…");
  try {
    const response = await fetch(url, { method: "POST", headers, body });
    const answer = await response.json();
    if (!response.ok) {
      setStatus(`${answer.status} ${answer.title}: ${answer.detail}`, true);
      return;
    }
    state.answers.push({ ...answer, said });
    setStatus(`utterance ${answer.index}: ${answer.emotion}`);
    render();
  } catch (err) {
    setStatus("the service did not answer: " + err.message, true);
  }
}

async function sendText() {
  const transcript = $("transcript").value.trim();
  if (!transcript) {
    setStatus("type an utterance first", true);
    return;
  }
  $("transcript").value = "";
  await post(JSON.stringify({ transcript }), false, transcript);
}

async function toggleRecording() {
  if (state.recorder) {
    state.recorder.stop();
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (err) {
    setStatus("no microphone: " + err.message, true);
    return;
  }
  const recorder = new MediaRecorder(stream);
  const chunks = [];
  recorder.ondataavailable = (event) => chunks.push(event.data);
  recorder.onstop = async () => {
    stream.getTracks().forEach((track) => track.stop());
    state.recorder = null;
    $("record").textContent = "● Record";
    $("record").classList.remove("recording");
    let wav;
    try {
      wav = await toWav(new Blob(chunks, { type: recorder.mimeType }));
    } catch (err) {
      setStatus("could not read the recording: " + err.message, true);
      return;
    }
    const form = new FormData();
    form.append("audio", wav, "recording.wav");
    const transcript = $("transcript").value.trim();
    if (transcript) form.append("transcript", transcript);
    $("transcript").value = "";
    await post(form, true, transcript ? `🎙 ${transcript}` : "🎙 (recording)");
  };
  recorder.start();
  state.recorder = recorder;
  $("record").textContent = "■ Stop";
  $("record").classList.add("recording");
  setStatus("recording…");
}

// MediaRecorder writes WebM/Opus in Chromium; the service reads WAV, FLAC and OGG. The browser decodes
// its own recording, and the first channel goes up as 16-bit PCM WAV at the browser's sample rate.
async function toWav(blob) {
  const context = new AudioContext();
  const audio = await context.decodeAudioData(await blob.arrayBuffer());
  context.close();
  const samples = audio.getChannelData(0);
  const view = new DataView(new ArrayBuffer(44 + samples.length * 2));
  const ascii = (offset, text) => [...text].forEach((c, i) => view.setUint8(offset + i, c.charCodeAt(0)));
  ascii(0, "RIFF");
  view.setUint32(4, 36 + samples.length * 2, true);
  ascii(8, "WAVE");
  ascii(12, "fmt ");
  view.setUint32(16, 16, true); // fmt chunk size
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, 1, true); // mono
  view.setUint32(24, audio.sampleRate, true);
  view.setUint32(28, audio.sampleRate * 2, true); // bytes per second
  view.setUint16(32, 2, true); // bytes per frame
  view.setUint16(34, 16, true); // bits per sample
  ascii(36, "data");
  view.setUint32(40, samples.length * 2, true);
  samples.forEach((s, i) => view.setInt16(44 + i * 2, Math.max(-1, Math.min(1, s)) * 0x7fff, true));
  return new Blob([view.buffer], { type: "audio/wav" });
}

function labels() {
  return state.answers.length ? Object.keys(state.answers[0].probabilities) : [];
}

function render() {
  renderAnswers();
  renderTimeline();
}

function renderAnswers() {
  const list = $("answers");
  list.replaceChildren();
  state.answers.forEach((answer) => {
    const item = document.createElement("li");
    item.className = "answer";
    item.dataset.index = answer.index;
    const emotion = document.createElement("span");
    emotion.className = "emotion";
    emotion.textContent = `${answer.emotion} (${(answer.probabilities[answer.emotion] * 100).toFixed(0)} %)`;
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = ` ${answer.modalities.join(" + ")}, context ${answer.context_size}, ` +
      `${answer.timings_ms.total.toFixed(0)} ms`;
    const bars = document.createElement("div");
    bars.className = "bars";
    labels().forEach((label, i) => {
      const bar = document.createElement("div");
      bar.style.width = `${answer.probabilities[label] * 100}%`;
      bar.style.background = COLORS[i % COLORS.length];
      bar.title = `${label}: ${answer.probabilities[label].toFixed(3)}`;
      bars.appendChild(bar);
    });
    const said = document.createElement("div");
    said.className = "said";
    said.textContent = answer.said;
    item.append(emotion, meta, said, bars);
    list.appendChild(item);
  });
}

function renderTimeline() {
  const svg = $("timeline");
  svg.replaceChildren();
  const legend = $("legend");
  legend.replaceChildren();
  const [width, height, pad] = [640, 200, 24];
  const n = state.answers.length;
  const x = (i) => (n <= 1 ? width / 2 : pad + (i * (width - 2 * pad)) / (n - 1));
  const y = (p) => height - pad - p * (height - 2 * pad);
  for (const p of [0, 0.5, 1]) {
    const line = document.createElementNS(SVG, "line");
    Object.entries({ x1: pad, x2: width - pad, y1: y(p), y2: y(p), stroke: "#e3e3e3" })
      .forEach(([k, v]) => line.setAttribute(k, v));
    const tick = document.createElementNS(SVG, "text");
    Object.entries({ x: 2, y: y(p) + 4, "font-size": 10, fill: "#888" }).forEach(([k, v]) => tick.setAttribute(k, v));
    tick.textContent = p.toFixed(1);
    svg.append(line, tick);
  }
  state.answers.forEach((a, i) => {
    const tick = document.createElementNS(SVG, "text");
    Object.entries({ x: x(i), y: height - 6, "font-size": 10, fill: "#888", "text-anchor": "middle" })
      .forEach(([k, v]) => tick.setAttribute(k, v));
    tick.textContent = a.index;
    svg.appendChild(tick);
  });
  labels().forEach((label, li) => {
    const color = COLORS[li % COLORS.length];
    const points = state.answers.map((a, i) => `${x(i)},${y(a.probabilities[label])}`).join(" ");
    const line = document.createElementNS(SVG, "polyline");
    Object.entries({ points, fill: "none", stroke: color, "stroke-width": 2, "data-label": label })
      .forEach(([k, v]) => line.setAttribute(k, v));
    svg.appendChild(line);
    state.answers.forEach((a, i) => {
      const dot = document.createElementNS(SVG, "circle");
      Object.entries({ cx: x(i), cy: y(a.probabilities[label]), r: 3, fill: color })
        .forEach(([k, v]) => dot.setAttribute(k, v));
      svg.appendChild(dot);
    });
    const key = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = color;
    key.append(swatch, label);
    legend.appendChild(key);
  });
}

$("send").addEventListener("click", sendText);
$("record").addEventListener("click", toggleRecording);
$("new-conversation").addEventListener("click", newConversation);
$("transcript").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && event.ctrlKey) sendText();
});
newConversation();
