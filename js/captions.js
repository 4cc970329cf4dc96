// Multiline text boxes lose their placeholder once filled; a caption drawn inside each box of the
// pack's nodes keeps target, anchor and preserve recognisable.
import { app } from "../../scripts/app.js";

function captionImage(text) {
  const svg = `<svg xmlns='http://www.w3.org/2000/svg' width='240' height='14'>` +
    `<text x='0' y='11' font-family='sans-serif' font-size='11' fill='gray'>${text}</text></svg>`;
  return `url("data:image/svg+xml;utf8,${encodeURIComponent(svg)}")`;
}

app.registerExtension({
  name: "comfyui_unlearn.captions",
  nodeCreated(node) {
    if (!node.comfyClass?.startsWith("Unlearn")) return;
    for (const widget of node.widgets ?? []) {
      const box = widget.element ?? widget.inputEl;     // 1.49 renamed it (inputEl warns there)
      if (!(box instanceof HTMLTextAreaElement)) continue;
      Object.assign(box.style, {
        paddingTop: "16px",
        backgroundImage: captionImage(widget.label ?? widget.name),   // the label is the translated name
        backgroundRepeat: "no-repeat",
        backgroundPosition: "6px 3px",
      });
    }
  },
});
