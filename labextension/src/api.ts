/** Calls to the jupyter-gpu server extension (under the server's base_url, with Jupyter's auth). */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { IState } from './model';

export interface IBackendOverride {
  url?: string;
  token?: string;
}

export async function fetchState(kernelId: string | null, backend: IBackendOverride): Promise<IState> {
  const settings = ServerConnection.makeSettings();
  const query = URLExt.objectToQueryString(kernelId ? { kernel: kernelId } : {});
  const url = URLExt.join(settings.baseUrl, 'jupyter-gpu', 'state') + query;
  const headers: Record<string, string> = {};
  if (backend.url) {
    headers['X-Jupyter-Gpu-Url'] = backend.url;
    headers['X-Jupyter-Gpu-Token'] = backend.token || '';
  }
  const response = await ServerConnection.makeRequest(url, { headers }, settings);
  const text = await response.text();
  if (!response.ok) {
    throw new Error(`jupyter-gpu server extension: HTTP ${response.status} ${text.slice(0, 200)}`);
  }
  return JSON.parse(text) as IState;
}
