"""The lab: what drives reelstream workers from outside (embedded broker, local stack, benches, chaos,
scale, synthetic generator, record/replay, demo). A worker process never imports it."""
