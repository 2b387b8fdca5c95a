// The mask as the form posts it: a PNG of the source's natural size, white where the picture is to
// be repainted and black elsewhere (a pixel counts as painted from half opacity, as the server reads it),
// put into a file input through DataTransfer so the form posts it like a chosen file.

/** The mask's pixels as opaque white/black ImageData, and whether anything is painted. */
export function maskPixels(maskCanvas) {
  const ctx = maskCanvas.getContext("2d");
  const pixels = ctx.getImageData(0, 0, maskCanvas.width, maskCanvas.height);
  const data = pixels.data;
  let painted = false;
  for (let i = 0; i < data.length; i += 4) {
    const value = data[i + 3] >= 128 ? 255 : 0;
    if (value) painted = true;
    data[i] = data[i + 1] = data[i + 2] = value;
    data[i + 3] = 255;
  }
  return { pixels, painted };
}

/** The mask as a PNG Blob (null when nothing is painted). */
export async function maskPng(maskCanvas) {
  const { pixels, painted } = maskPixels(maskCanvas);
  if (!painted) return null;
  const out = document.createElement("canvas");
  out.width = pixels.width;
  out.height = pixels.height;
  out.getContext("2d").putImageData(pixels, 0, 0);
  return new Promise((resolve, reject) => {
    out.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("The mask could not be encoded."))), "image/png");
  });
}

/** Put a Blob into a file input as if the user had chosen it (or empty the input for null). */
export function setInputFile(input, blob, name) {
  const transfer = new DataTransfer();
  if (blob) transfer.items.add(new File([blob], name, { type: blob.type || "image/png" }));
  input.files = transfer.files;
}
