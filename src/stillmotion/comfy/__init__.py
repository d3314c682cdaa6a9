"""ComfyUI workflows in and out: an API-format workflow <-> GenerationSpec fields.

graph.py: SVD's nodes, parse_svd_workflow() and the steps every graph shares; wan_graph.py: Wan's nodes
(UNETLoader, ModelSamplingSD3, CLIPLoader, CLIPTextEncode, CLIPVision*, VAELoader, WanImageToVideo), their
export, and parse_workflow(), which picks the graph by its nodes; media.py: reading a workflow from a .json or from a
ComfyUI output's metadata; checkpoints.py: ckpt_name -> --model, and workflows in API requests and
manifests; export.py: a sidecar -> a workflow.

In: `parse_workflow(prompt)` follows the graph from the sampler back, the way
ComfyUI's own SVD example is wired:

    ImageOnlyCheckpointLoader (ckpt_name) --model--> VideoLinearCFGGuidance (min_cfg)
        |  clip_vision, vae                                  |
        v                                                    v
    SVD_img2vid_Conditioning (width, height, video_frames,  KSampler / KSamplerAdvanced
      motion_bucket_id, fps, augmentation_level) ---------> (seed, steps, cfg, sampler_name,
        ^ init_image                                          scheduler, denoise)
    LoadImage (image)                                         |
                                       VAEDecode <------------+
                                           |
    SaveAnimatedWEBP / SaveAnimatedPNG / SaveWEBM / VHS_VideoCombine / CreateVideo -> SaveVideo
                                    (fps or frame_rate: the playback rate; the format)

Every node of the workflow is either one of these or refused (InvalidInput,
exit 2) with its id, class and the input at fault; a setting is either honoured
or refused, and the few that change only how a file is encoded (quality, crf,
filename_prefix) are listed in `Workflow.notes`, which the sidecar records.

The conditioning fps (SVD_img2vid_Conditioning.fps) and the playback rate (the
save node's fps) may differ, as in ComfyUI's SVD example (6 and 10): the spec
keeps both (`conditioning_fps`, `fps`).

Out: `export_workflow(sidecar_record)` writes the same nodes for a video we
made, with ComfyUI's class and input names; settings ComfyUI has no node for
(interpolation, loops, chained segments, speed) ride along in the sampler
node's `_meta.stillmotion`, which ComfyUI ignores and `parse_workflow` reads.

Also here: the workflow that ComfyUI and VideoHelperSuite embed in their
outputs (`workflow_from_media`): PNG text or `comf` chunks "prompt", WebP EXIF
0x0110 "prompt:{...}", MP4/WebM container tags "prompt" or "comment".
"""

from __future__ import annotations

from .checkpoints import KNOWN_CHECKPOINTS, apply_workflow, comfyui_dir, resolve_checkpoint, same_model, workflow_fields
from .export import export_workflow, write_workflow
from .graph import Workflow, as_prompt, is_api_workflow
from .wan_graph import check_wan_model, parse_workflow
from .media import read_from_file, workflow_from_media

__all__ = [
    "KNOWN_CHECKPOINTS", "Workflow", "apply_workflow", "as_prompt", "check_wan_model", "comfyui_dir", "export_workflow", "is_api_workflow",
    "parse_workflow", "read_from_file", "resolve_checkpoint", "same_model", "workflow_fields",
    "workflow_from_media", "write_workflow",
]
