// The playground: a one-use client secret from the console, then the Realtime API with it,
// over WebRTC (POST /v1/realtime/calls: the microphone as an audio track, events on the
// 'oai-events' data channel, the reply on the remote track) or over a WebSocket
// (subprotocol 'openai-insecure-api-key.<secret>', PCM16 at 24 kHz both ways through an
// AudioWorklet). Captions come from the transcripts either way.
(function () {
  "use strict";
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  var form = document.getElementById("playground");
  var stopBtn = document.getElementById("pg-stop");
  var startBtn = document.getElementById("pg-start");
  var status = document.getElementById("pg-status");
  var captions = document.getElementById("pg-captions");
  var textForm = document.getElementById("pg-text");
  var player = document.getElementById("pg-audio");
  var conn = null, ctx = null, stream = null, playAt = 0, current = null;
  var LOOPBACK = ["127.0.0.1", "localhost", "[::1]"].indexOf(location.hostname) >= 0;

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
    if (!ctx) return;
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
      case "session.created": say("Connected (" + conn.kind + "): speak, or type below."); break;
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
    if (conn) conn.close();
    if (stream) stream.getTracks().forEach(function (t) { t.stop(); });
    if (ctx) ctx.close();
    conn = ctx = stream = null;
    startBtn.disabled = false;
    stopBtn.disabled = true;
  }

  function mic() {
    return navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true } })
      .then(function (s) { stream = s; return s; });
  }

  // WebSocket: events as JSON text, the microphone as input_audio_buffer.append
  function overWebSocket(minted) {
    ctx = new AudioContext({ sampleRate: 24000 });
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var ws = new WebSocket(scheme + location.host + "/v1/realtime?model=" +
                           encodeURIComponent(minted.model),
                           ["realtime", "openai-insecure-api-key." + minted.value]);
    conn = { kind: "WebSocket",
             send: function (ev) { if (ws.readyState === 1) ws.send(JSON.stringify(ev)); },
             close: function () { ws.close(1000); } };
    ws.onmessage = function (m) { try { onEvent(JSON.parse(m.data)); } catch (err) { /* not JSON */ } };
    ws.onclose = function (c) { say("Closed (" + c.code + (c.reason ? " " + c.reason : "") + ")."); stop(); };
    return mic().then(function () {
      return ctx.audioWorklet.addModule("/dashboard/static/pcm-worklet.js");
    }).then(function () {
      var node = new AudioWorkletNode(ctx, "pcm-capture");
      node.port.onmessage = function (m) {
        conn && conn.send({ type: "input_audio_buffer.append", audio: b64(pcm16(m.data)) });
      };
      ctx.createMediaStreamSource(stream).connect(node);
    }).catch(function (err) { say("No microphone (" + err.message + "): type instead."); });
  }

  // WebRTC: the call's SDP offer to the gateway, with the client secret
  function overWebRTC(minted) {
    var pc = new RTCPeerConnection({ iceServers: [] });
    var dc = pc.createDataChannel("oai-events");
    conn = { kind: "WebRTC",
             send: function (ev) { if (dc.readyState === "open") dc.send(JSON.stringify(ev)); },
             close: function () { dc.close(); pc.close(); } };
    dc.onmessage = function (m) { try { onEvent(JSON.parse(m.data)); } catch (err) { /* not JSON */ } };
    pc.ontrack = function (e) { player.srcObject = e.streams[0] || new MediaStream([e.track]); player.play(); };
    pc.onconnectionstatechange = function () {
      if (pc.connectionState === "failed" || pc.connectionState === "closed") {
        say("Call ended (" + pc.connectionState + ")."); stop();
      }
    };
    return mic().then(function (s) {
      pc.addTrack(s.getAudioTracks()[0], s);
      return pc.createOffer();
    }).then(function (offer) {
      return pc.setLocalDescription(offer);
    }).then(function () {
      return new Promise(function (ok) {
        if (pc.iceGatheringState === "complete") return ok();
        pc.addEventListener("icegatheringstatechange", function () {
          if (pc.iceGatheringState === "complete") ok();
        });
      });
    }).then(function () {
      var sdp = pc.localDescription.sdp;
      if (LOOPBACK) {   // the console is on this machine: its loopback candidates are enough
        sdp = sdp.split("\r\n").filter(function (l) {
          return l.indexOf("a=candidate:") !== 0 || l.indexOf(" 127.0.0.1 ") >= 0;
        }).join("\r\n");
      }
      return fetch("/v1/realtime/calls?model=" + encodeURIComponent(minted.model), {
        method: "POST", body: sdp,
        headers: { "Authorization": "Bearer " + minted.value, "Content-Type": "application/sdp" } });
    }).then(function (r) {
      return r.text().then(function (body) {
        if (r.status !== 201) {
          var msg = body;
          try { msg = JSON.parse(body).error.message; } catch (e) { /* plain text */ }
          throw new Error(msg);
        }
        return pc.setRemoteDescription({ type: "answer", sdp: body });
      });
    });
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    startBtn.disabled = true;
    captions.textContent = "";
    current = null;
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
      stopBtn.disabled = false;
      say("Connecting…");
      return fd.get("transport") === "websocket" ? overWebSocket(minted) : overWebRTC(minted);
    }).catch(function (err) { say("Could not start: " + err.message); stop(); });
  });

  stopBtn.addEventListener("click", function () { say("Stopped."); stop(); });

  textForm.addEventListener("submit", function (e) {
    e.preventDefault();
    var text = textForm.elements.text.value.trim();
    if (!text || !conn) return;
    caption("you", "You: " + text);
    conn.send({ type: "conversation.item.create", item: {
      type: "message", role: "user", content: [{ type: "input_text", text: text }] } });
    conn.send({ type: "response.create" });
    textForm.elements.text.value = "";
  });
})();
