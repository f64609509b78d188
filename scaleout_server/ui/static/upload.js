// Chunked upload through /api/v1/file-upload (init, chunks in order, complete), as the CLI does, so
// files of any size within the server's max_upload_bytes go up without one huge request. The
// returned file_token is then named in the form POST to models/ or packages/.

import { api, ApiError, request } from "./api.js";
import { errorBox, fmtBytes, h, progress, update } from "./dom.js";

export const CHUNK_SIZE = 1024 * 1024;

// Upload `file` (a File/Blob with a name); `onProgress(sentBytes, totalBytes)`. Returns the file_token.
export async function uploadFile(file, onProgress = () => {}) {
  const init = await api.post("file-upload/init", { file_name: file.name, file_size: file.size, chunk_size: CHUNK_SIZE });
  const uploadId = init.upload_id;
  const chunkSize = init.chunk_size || CHUNK_SIZE;
  try {
    let index = 0;
    for (let start = 0; start < file.size; start += chunkSize) {
      const piece = file.slice(start, Math.min(file.size, start + chunkSize));
      await request("POST", `file-upload/${uploadId}/chunk`, {
        body: piece, headers: { "X-Chunk-Index": String(index), "Content-Type": "application/octet-stream" },
      });
      index += 1;
      onProgress(Math.min(file.size, start + chunkSize), file.size);
    }
    const done = await api.post(`file-upload/${uploadId}/complete`, {});
    onProgress(file.size, file.size);
    return done.file_token;
  } catch (err) {
    try {
      await api.post(`file-upload/${uploadId}/abort`, {});
    } catch {
      // the upload is swept by the server later anyway
    }
    throw err instanceof ApiError ? err : new ApiError(String(err));
  }
}

// Wire an upload form: on submit, `check(file)` may return a message that stops it; otherwise the
// chosen file goes up with a progress bar in `status`, then `register(file, fileToken)` names the
// upload to the API and returns what to show; `onUploaded()` refreshes the page.
export function handleUploadForm(form, { file, status, submit, check, register, onUploaded }) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const chosen = file.files[0];
    const problem = check(chosen);
    if (problem) {
      update(status, errorBox(problem));
      return;
    }
    submit.disabled = true;
    status.replaceChildren(h("p", {}, `Uploading ${chosen.name}…`), progress(0, chosen.size));
    try {
      const token = await uploadFile(chosen, (sent, total) => status.replaceChildren(
        h("p", {}, `Uploading ${chosen.name}: ${fmtBytes(sent)} of ${fmtBytes(total)}`), progress(sent, total)));
      status.replaceChildren(await register(chosen, token));
      file.value = "";
      onUploaded();
    } catch (err) {
      update(status, errorBox(`Upload failed: ${err.message}`));
    } finally {
      submit.disabled = false;
    }
  });
}
