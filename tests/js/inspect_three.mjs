// three.js GLTFLoader on one GLB: meshes, morph targets, animation clips, and the world bounds of the
// visible geometry (morphs applied, zero-scale nodes skipped) sampled at given animation times.
import { readFileSync } from "node:fs";
globalThis.self = globalThis; // GLTFLoader's texture code looks for `self`
const THREE = await import("three");
const { GLTFLoader } = await import("three/examples/jsm/loaders/GLTFLoader.js");

const [path, ...timeArgs] = process.argv.slice(2);
const bytes = readFileSync(path);
const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
const gltf = await new Promise((resolve, reject) => new GLTFLoader().parse(buffer, "", resolve, reject));
const root = gltf.scene;
const meshes = [];
root.traverse((o) => {
  if (o.isMesh) {
    const attrs = o.geometry.attributes;
    const morph = o.geometry.morphAttributes.position || [];
    meshes.push({ name: o.name, vertices: attrs.position.count, hasColor: !!attrs.color, hasUv: !!attrs.uv,
                  hasTexture: !!(o.material && o.material.map), morphTargets: morph.length });
  }
});
const clips = gltf.animations.map((c) => ({ name: c.name, duration: c.duration, tracks: c.tracks.length,
                                           interpolations: c.tracks.map((t) => t.getInterpolation()) }));

function visibleBounds() {
  root.updateMatrixWorld(true);
  const box = new THREE.Box3();
  const v = new THREE.Vector3();
  root.traverse((o) => {
    if (!o.isMesh) return;
    // A flip-book hides frames with scale 0 (getWorldScale cannot tell: decompose fails on it).
    if (Math.abs(o.matrixWorld.determinant()) < 1e-12) return;
    for (let i = 0; i < o.geometry.attributes.position.count; i++) {
      o.getVertexPosition(i, v); // applies morph target influences
      box.expandByPoint(v.applyMatrix4(o.matrixWorld));
    }
  });
  return box.isEmpty() ? null : [box.min.toArray(), box.max.toArray()];
}

const samples = [];
const mixer = new THREE.AnimationMixer(root);
if (gltf.animations.length) {
  // Play once and hold the last frame, so sampling at the clip's duration shows the last keyframe.
  const action = mixer.clipAction(gltf.animations[0]);
  action.setLoop(THREE.LoopOnce, 1);
  action.clampWhenFinished = true;
  action.play();
}
for (const t of timeArgs.map(Number)) {
  mixer.setTime(t);
  samples.push({ time: t, bounds: visibleBounds() });
}
console.log(JSON.stringify({ meshes, clips, samples, extras: gltf.animations.length ? gltf.parser.json.animations[0].extras : null,
                             sceneExtras: gltf.parser.json.scenes[0].extras || null }));
