"""The names of the converted weight files the "ppocr" family serves from.

Both the converter (which writes them) and the pipeline (which loads them) name them from here,
so that serving never imports the converter.
"""

DET_FILE = "ppocrv6_det_small.pt"
CLS_FILE = "ppocr_mobile_v2.0_cls.pt"
REC_FILE = "ppocrv6_rec_small.pt"
DICT_FILE = "ppocrv6_dict.txt"
