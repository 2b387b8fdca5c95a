// The mask as the form posts it: a greyscale PNG (no alpha channel) of the source's natural size,
// white where the picture is to be repainted and black elsewhere; a pixel counts as painted from half
// opacity, as the server reads it. A canvas can only encode RGBA PNGs, and an alpha channel invites a
// reader to take the mask from it (an opaque one would then mask everything), so the PNG is written
// here: 8-bit greyscale, compressed with the browser's CompressionStream. It goes into a file input
// through DataTransfer, so the form posts it like a chosen file.

/** The mask as one byte per pixel (255 painted, 0 not), and whether anything is painted. */
export function maskBytes(maskCanvas) {
  const { width, height } = maskCanvas;
  const rgba = maskCanvas.getContext("2d").getImageData(0, 0, width, height).data;
  const grey = new Uint8Array(width * height);
  let painted = false;
  for (let i = 0, p = 3; i < grey.length; i++, p += 4) {
    if (rgba[p] >= 128) { grey[i] = 255; painted = true; }
  }
  return { grey, width, height, painted };
}

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32(bytes) {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type, data) {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

async function zlib(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream("deflate")); // zlib format
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** An 8-bit greyscale PNG of `grey` (one byte per pixel, rows top to bottom). */
export async function greyPng(grey, width, height) {
  const rows = new Uint8Array((width + 1) * height); // each row: filter type 0, then its pixels
  for (let y = 0; y < height; y++) rows.set(grey.subarray(y * width, (y + 1) * width), y * (width + 1) + 1);
  const header = new Uint8Array(13);
  const view = new DataView(header.buffer);
  view.setUint32(0, width);
  view.setUint32(4, height);
  header.set([8, 0, 0, 0, 0], 8); // bit depth 8, colour type 0 (greyscale), deflate, no filter, no interlace
  const signature = new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]);
  const parts = [signature, chunk("IHDR", header), chunk("IDAT", await zlib(rows)), chunk("IEND", new Uint8Array())];
  return new Blob(parts, { type: "image/png" });
}

/** The mask as a PNG Blob (null when nothing is painted). */
export async function maskPng(maskCanvas) {
  const { grey, width, height, painted } = maskBytes(maskCanvas);
  return painted ? greyPng(grey, width, height) : null;
}

/** Put a Blob into a file input as if the user had chosen it (or empty the input for null). */
export function setInputFile(input, blob, name) {
  const transfer = new DataTransfer();
  if (blob) transfer.items.add(new File([blob], name, { type: blob.type || "image/png" }));
  input.files = transfer.files;
}
