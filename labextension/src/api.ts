/** Calls to the jupyter-gpu server extension (under the server's base_url, with Jupyter's auth). */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { IState } from './model';

export interface IBackendOverride {
  url?: string;
  token?: string;
}

/** The sidebar's state, from the backend the Jupyter server is configured with (its JUPYTER_GPU_URL,
 * else the embedded one): the server never asks a backend a request names (a request forgery from
 * its host), so the lab setting's backend URL points the kernels only. */
export async function fetchState(kernelId: string | null): Promise<IState> {
  const settings = ServerConnection.makeSettings();
  const query = URLExt.objectToQueryString(kernelId ? { kernel: kernelId } : {});
  const url = URLExt.join(settings.baseUrl, 'jupyter-gpu', 'state') + query;
  const response = await ServerConnection.makeRequest(url, {}, settings);
  const text = await response.text();
  if (!response.ok) {
    throw new Error(`jupyter-gpu server extension: HTTP ${response.status} ${text.slice(0, 200)}`);
  }
  return JSON.parse(text) as IState;
}
