// Fetches and inflates the viewer's gzip files off the page's main thread (the page shares that thread
// with Streamlit's own page), and turns a CT slab's low bytes then high bytes into int16 here too.
let abort = new AbortController();

self.onmessage = async (ev) => {
  if (ev.data.abort) { abort.abort(); abort = new AbortController(); return; }
  const { id, url, kind } = ev.data;
  try {
    const r = await fetch(url, { signal: abort.signal });
    if (!r.ok) throw new Error(`${r.status} ${url.split("/").pop()}`);
    const bytes = new Uint8Array(await new Response(r.body.pipeThrough(new DecompressionStream("gzip"))).arrayBuffer());
    let out = bytes;
    if (kind === "ct") {
      const half = bytes.length >> 1;
      out = new Int16Array(half);
      for (let i = 0; i < half; i++) out[i] = (bytes[half + i] << 8) | bytes[i];  // wraps to int16
    }
    self.postMessage({ id, buffer: out.buffer }, [out.buffer]);
  } catch (e) {
    self.postMessage({ id, error: e.name === "AbortError" ? "AbortError" : String(e.message || e) });
  }
};
