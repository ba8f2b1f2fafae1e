/** Mime renderers: the `%%gpu` cell footer and its live status line; a spawned call's line (calls.ts). */
import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Widget } from '@lumino/widgets';

import { CALL_MIME, callOf, renderCall } from './calls';
import { IFooterData, MIME, renderFooter } from './format';

export class FooterRenderer extends Widget implements IRenderMime.IRenderer {
  constructor(options: IRenderMime.IRendererOptions) {
    super();
    this._mimeType = options.mimeType;
    this.addClass('jp-gpu-footer-output');
  }

  renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    const data = model.data[this._mimeType] as unknown as IFooterData;
    renderFooter(this.node, data || {});
    return Promise.resolve();
  }

  private _mimeType: string;
}

export const rendererFactory: IRenderMime.IRendererFactory = {
  safe: true,
  mimeTypes: [MIME],
  // before text/html, so the HTML fallback is used only where this extension is absent
  defaultRank: 40,
  createRenderer: options => new FooterRenderer(options)
};

const extension: IRenderMime.IExtension = {
  id: 'jupyter-gpu:footer',
  rendererFactory,
  rank: 40,
  dataType: 'json'
};

/** `f.spawn(x)`'s output: the function, the call's id, the code that gets it back (index.ts keeps the id in the cell's metadata). */
export class CallRenderer extends Widget implements IRenderMime.IRenderer {
  constructor(options: IRenderMime.IRendererOptions) {
    super();
    this._mimeType = options.mimeType;
    this.addClass('jp-gpu-call-output');
  }

  renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    renderCall(this.node, callOf(model.data[this._mimeType]));
    return Promise.resolve();
  }

  private _mimeType: string;
}

export const callRendererFactory: IRenderMime.IRendererFactory = {
  safe: true,
  mimeTypes: [CALL_MIME],
  defaultRank: 40, // before text/html, as the footer's
  createRenderer: options => new CallRenderer(options)
};

const callExtension: IRenderMime.IExtension = {
  id: 'jupyter-gpu:call',
  rendererFactory: callRendererFactory,
  rank: 40,
  dataType: 'json'
};

export default [extension, callExtension];
