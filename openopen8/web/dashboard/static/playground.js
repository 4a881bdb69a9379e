// The playground: a one-use client secret from the console, then the Realtime API over a
// WebSocket with it (subprotocol 'openai-insecure-api-key.<secret>'), PCM16 at 24 kHz both
// ways through an AudioWorklet, captions from the transcripts.
(function () {
  "use strict";
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  var form = document.getElementById("playground");
  var stopBtn = document.getElementById("pg-stop");
  var startBtn = document.getElementById("pg-start");
  var status = document.getElementById("pg-status");
  var captions = document.getElementById("pg-captions");
  var textForm = document.getElementById("pg-text");
  var ws = null, ctx = null, stream = null, playAt = 0, current = null;

  function say(text) { status.textContent = text; }

  function caption(cls, text) {
    var p = document.createElement("p");
    p.className = cls;
    p.textContent = text;
    captions.appendChild(p);
    captions.scrollTop = captions.scrollHeight;
    return p;
  }

  function b64(bytes) {
    var s = "";
    for (var i = 0; i < bytes.length; i += 0x8000) {
      s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(s);
  }

  function pcm16(f32) {
    var out = new Int16Array(f32.length);
    for (var i = 0; i < f32.length; i++) {
      var v = Math.max(-1, Math.min(1, f32[i]));
      out[i] = v < 0 ? v * 0x8000 : v * 0x7fff;
    }
    return new Uint8Array(out.buffer);
  }

  function play(base64) {
    var bin = atob(base64), n = bin.length >> 1;
    var buf = ctx.createBuffer(1, n, 24000), ch = buf.getChannelData(0);
    for (var i = 0; i < n; i++) {
      var v = bin.charCodeAt(2 * i) | (bin.charCodeAt(2 * i + 1) << 8);
      ch[i] = (v >= 0x8000 ? v - 0x10000 : v) / 0x8000;
    }
    var src = ctx.createBufferSource();
    src.buffer = buf;
    src.connect(ctx.destination);
    playAt = Math.max(playAt, ctx.currentTime);
    src.start(playAt);
    playAt += buf.duration;
  }

  function onEvent(ev) {
    switch (ev.type) {
      case "session.created": say("Connected: speak, or type below."); break;
      case "conversation.item.input_audio_transcription.completed":
        caption("you", "You: " + ev.transcript); break;
      case "response.output_audio_transcript.delta":
      case "response.output_text.delta":
        if (!current) current = caption("bot", "");
        current.textContent += ev.delta; break;
      case "response.output_audio.delta": play(ev.delta); break;
      case "response.done": current = null; break;
      case "input_audio_buffer.speech_started": playAt = 0; break;
      case "error": caption("error", "Error: " + ((ev.error || {}).message || "")); break;
    }
  }

  function stop() {
    if (ws) ws.close(1000);
    if (stream) stream.getTracks().forEach(function (t) { t.stop(); });
    if (ctx) ctx.close();
    ws = ctx = stream = null;
    startBtn.disabled = false;
    stopBtn.disabled = true;
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    startBtn.disabled = true;
    var fd = new FormData(form);
    say("Minting a client secret…");
    fetch("/dashboard/playground/secret", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify({ token: fd.get("token"), model: fd.get("model"), voice: fd.get("voice") })
    }).then(function (r) {
      return r.json().then(function (d) {
        if (!r.ok) throw new Error((d.error || {}).message || ("HTTP " + r.status));
        return d;
      });
    }).then(function (minted) {
      ctx = new AudioContext({ sampleRate: 24000 });
      var scheme = location.protocol === "https:" ? "wss://" : "ws://";
      ws = new WebSocket(scheme + location.host + "/v1/realtime?model=" +
                         encodeURIComponent(minted.model),
                         ["realtime", "openai-insecure-api-key." + minted.value]);
      ws.onmessage = function (m) { try { onEvent(JSON.parse(m.data)); } catch (err) { /* not JSON */ } };
      ws.onclose = function (c) { say("Closed (" + c.code + (c.reason ? " " + c.reason : "") + ")."); stop(); };
      stopBtn.disabled = false;
      say("Connecting…");
      return navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true } })
        .then(function (s) {
          stream = s;
          return ctx.audioWorklet.addModule("/dashboard/static/pcm-worklet.js");
        }).then(function () {
          var node = new AudioWorkletNode(ctx, "pcm-capture");
          node.port.onmessage = function (m) {
            if (ws && ws.readyState === 1) {
              ws.send(JSON.stringify({ type: "input_audio_buffer.append", audio: b64(pcm16(m.data)) }));
            }
          };
          ctx.createMediaStreamSource(stream).connect(node);
        }).catch(function (err) { say("No microphone (" + err.message + "): type instead."); });
    }).catch(function (err) { say("Could not start: " + err.message); stop(); });
  });

  stopBtn.addEventListener("click", stop);

  textForm.addEventListener("submit", function (e) {
    e.preventDefault();
    var text = textForm.elements.text.value.trim();
    if (!text || !ws || ws.readyState !== 1) return;
    caption("you", "You: " + text);
    ws.send(JSON.stringify({ type: "conversation.item.create", item: {
      type: "message", role: "user", content: [{ type: "input_text", text: text }] } }));
    ws.send(JSON.stringify({ type: "response.create" }));
    textForm.elements.text.value = "";
  });
})();
