#include "tre/backend.h"
