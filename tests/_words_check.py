import dataclasses, sys, json, numpy as np
from pathlib import Path
from service import settings as S
from service.documents.images import decode
from service.settings import Limits
from service.ocr.model import load_model
fam = sys.argv[1]
cfg = S.load()
m = load_model(dataclasses.replace(cfg.model, family=fam, precision="fp32"), "cpu", threads=2)
out = {}
for stem in sys.argv[2:]:
    p = next(q for q in (Path("../shared/ocr-dev")/f"{stem}.jpg", Path("../shared/ocr-dev")/f"{stem}.png") if q.exists())
    page = m.parse([decode(p.read_bytes(), Limits())])[0]
    out[stem] = {"width": page.width, "height": page.height, "lines": [l.to_json(words=True) for l in page.lines]}
    for l in page.lines[:8]:
        print(repr(l.text), [(w.text, [round(c) for c in w.quad[0]+w.quad[2]]) for w in l.words], [round(c) for c in l.quad[0]+l.quad[2]])
Path(f"/tmp/words_{fam}.json").write_text(json.dumps(out))
