/** Mime renderer for the `%%gpu` cell footer and its live status line. */
import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Widget } from '@lumino/widgets';

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

export default extension;
