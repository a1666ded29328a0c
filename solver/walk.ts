/**
 * Walks over a build graph without recursion. A Dockerfile of 10,000 steps is a chain of 10,000
 * vertices, each the input of the next: deeper than Node's stack, so nothing that follows inputs
 * may recurse along them.
 */

/**
 * Every node reachable from `roots` through `inputsOf`, each once, inputs before the nodes that use
 * them, in the order a recursive depth-first walk would finish them. Nodes in `seen` are skipped,
 * and each node visited is added to it.
 */
export function inputsFirst<T>(
  roots: Iterable<T>,
  inputsOf: (node: T) => Iterable<T>,
  seen: Set<T> = new Set(),
): T[] {
  const order: T[] = [];
  const path: { node: T; inputs: Iterator<T> }[] = [];
  const enter = (node: T) => {
    seen.add(node);
    path.push({ node, inputs: inputsOf(node)[Symbol.iterator]() });
  };
  for (const root of roots) {
    if (seen.has(root)) continue;
    enter(root);
    while (path.length > 0) {
      const top = path[path.length - 1]!;
      const next = top.inputs.next();
      if (next.done) {
        path.pop();
        order.push(top.node);
      } else if (!seen.has(next.value)) {
        enter(next.value);
      }
    }
  }
  return order;
}
