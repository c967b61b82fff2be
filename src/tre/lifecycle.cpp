#include "tre/lifecycle.h"
