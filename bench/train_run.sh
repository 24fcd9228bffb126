# Sourced by bench/span_objective.sh and bench/vmap_approx.sh: one trial of a tuning grid.
# The caller sets OUT, FK (the fusekit program) and the array common (train's shared options).
# run NAME SEED ARGS...: trains OUT/runs/NAME (kept when complete) and prints its final val_bpb
run() {
  local name=$1 seed=$2; shift 2
  local dir="$OUT/runs/$name"
  [ -f "$dir/model.safetensors" ] || nice "$FK" train "${common[@]}" -o "$dir" --seed "$seed" "$@" >"$OUT/runs/$name.log" 2>&1
  grep -o '"val_bpb":[0-9.]*' "$dir/metrics.jsonl" | tail -1 | cut -d: -f2
}
