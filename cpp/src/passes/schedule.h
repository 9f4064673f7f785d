// Which nodes a function needs, and in what order they run.
#pragma once

#include <string>
#include <vector>

#include "gometal/ir.h"

namespace gometal {

struct FunctionSpec {
  std::string name;
  std::vector<int> inputs;   // Input nodes, in the order run() receives arrays
  std::vector<int> outputs;  // values returned by run()
  std::vector<int> effects;  // Assign nodes
  bool advance_rng = false;  // each run draws fresh random numbers
};

// Nodes that share their input's memory: no kernel, no buffer of their own.
bool is_alias(const Graph& g, int id);

struct Schedule {
  std::vector<int> order;       // non-leaf, non-alias nodes in execution order
  std::vector<int> position;    // per node id: index in `order`, or -1
  std::vector<int> alias_root;  // per node id: the node whose memory it uses
  std::vector<char> needed;     // per node id
  // Every effect runs after all other readers of the variables it writes (through aliases too).
};

Schedule schedule_function(const Graph& g, const FunctionSpec& fn);

}  // namespace gometal
