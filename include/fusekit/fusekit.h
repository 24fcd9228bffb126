// fusekit: knowledge fusion and redundancy folding for causal language models.
#ifndef FUSEKIT_H
#define FUSEKIT_H
#include "fusekit/base.h"
#include "fusekit/cluster.h"
#include "fusekit/align.h"
#include "fusekit/analyze.h"
#include "fusekit/data.h"
#include "fusekit/fold.h"
#include "fusekit/fusion.h"
#include "fusekit/gguf.h"
#include "fusekit/gguf_model.h"
#include "fusekit/hf.h"
#include "fusekit/html.h"
#include "fusekit/merge.h"
#include "fusekit/model.h"
#include "fusekit/probes.h"
#include "fusekit/safetensors.h"
#include "fusekit/sample.h"
#include "fusekit/store.h"
#include "fusekit/synth.h"
#include "fusekit/tokenizer.h"
#include "fusekit/train.h"
#endif
