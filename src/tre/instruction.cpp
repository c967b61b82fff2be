#include "tre/instruction.h"
