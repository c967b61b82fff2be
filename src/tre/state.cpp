#include "tre/state.h"
