#!/bin/sh
# Remakes the simulators' bundled clips (needs ffmpeg with libx264; nothing needs it at run time).
# Each is 2 s of a drifting two-colour gradient with a white square moving over it: H.264
# Constrained Baseline, 320x180, 24 fps, no audio, moov before mdat (a browser starts playing
# before the whole file is in). The encoder's settings SEI and all metadata are stripped, so the
# files are a few KB and the same on every run.
set -eu
cd "$(dirname "$0")"
clip() {  # name colour0 colour1 seed x(t) y(t)
    ffmpeg -hide_banner -loglevel error -y \
        -f lavfi -i "gradients=s=320x180:r=24:d=2:speed=0.03:n=2:c0=$2:c1=$3:seed=$4" \
        -f lavfi -i "color=c=white:s=28x28:r=24:d=2" \
        -filter_complex "[0][1]overlay=x='$5':y='$6':shortest=1,format=yuv420p" \
        -c:v libx264 -profile:v baseline -level 3.0 -crf 34 -g 48 \
        -bsf:v filter_units=remove_types=6 -movflags +faststart \
        -map_metadata -1 -fflags +bitexact -flags:v +bitexact "$1.mp4"
}
clip dawn 0x1e3a8a 0xf97316 3 "20+t*130" "76+30*sin(t*3.1)"
clip sea 0x0f766e 0x38bdf8 5 "272-t*120" "40+t*50"
clip dusk 0x581c87 0xfacc15 9 "146+90*cos(t*3.1)" "76+50*sin(t*3.1)"
